//! Reconciliation: converging to what is actually running.
//!
//! Drivers lose messages, agents restart, instances vanish. A reconciliation event carries the
//! actual set of containers on a node (or of instances in the account); the controller kills
//! what it does not know and marks lost what it knows but is missing.

use super::{Command, Controller, InstanceId, TerminateReason};
use crate::ids::{NodeId, TaskId};
use crate::job::{TaskReason, TaskState};
use std::collections::BTreeSet;

/// An instance the controller terminated and a listing still shows after this long is
/// terminated again (the first call may have failed).
pub const TERMINATE_RETRY_MS: u64 = 60_000;

impl Controller {
    pub(crate) fn reconcile_tasks(&mut self, now_ms: u64, node: NodeId, running: Vec<TaskId>) {
        let grace_ms = self.config.kill_grace_ms;
        let reported: BTreeSet<TaskId> = running.into_iter().collect();
        let Some(&idx) = self.node_index.get(&node) else {
            // A node the controller does not know: nothing on it is ours.
            for task in reported {
                self.out.push(Command::KillTask {
                    task,
                    node,
                    grace_ms,
                    reason: TaskReason::Killed,
                });
            }
            return;
        };
        let ours: Vec<TaskId> = self.nodes[idx as usize].tasks.iter().copied().collect();
        let reconcile_grace = self.config.timeouts.reconcile_grace_ms;
        for task in &ours {
            if reported.contains(task) {
                continue;
            }
            let t = &self.tasks[task];
            let young = matches!(t.state, TaskState::Launched | TaskState::StartInitiated)
                && now_ms < t.launched_ms + reconcile_grace;
            if !young {
                self.finish_lost(now_ms, *task);
            }
        }
        let ours: BTreeSet<TaskId> = ours.into_iter().collect();
        for task in reported {
            if !ours.contains(&task) {
                self.out.push(Command::KillTask {
                    task,
                    node,
                    grace_ms,
                    reason: TaskReason::Killed,
                });
            }
        }
    }

    pub(crate) fn reconcile_instances(&mut self, now_ms: u64, instances: Vec<InstanceId>) {
        let listed: BTreeSet<InstanceId> = instances.into_iter().collect();
        // Known but missing: gone.
        let booting_missing: Vec<InstanceId> = self
            .booting
            .keys()
            .filter(|i| !listed.contains(*i))
            .cloned()
            .collect();
        for i in booting_missing {
            self.instance_terminated(now_ms, i);
        }
        let nodes_missing: Vec<u32> = self
            .instance_node
            .iter()
            .filter(|(i, _)| !listed.contains(*i))
            .map(|(_, &n)| n)
            .collect();
        for n in nodes_missing {
            self.node_lost(now_ms, n);
        }
        // Instances this controller asked to terminate stay out of the strangers while a
        // listing may show them still running (taken before the driver carried the
        // termination out, or in the step that issued it); one still listed after
        // `TERMINATE_RETRY_MS` is terminated again.
        self.terminated
            .retain(|i, at| listed.contains(i) && now_ms < *at + TERMINATE_RETRY_MS);
        // Listed but unknown: terminated, unless a request may still report it.
        if !self.provisions.is_empty() {
            return;
        }
        for i in listed {
            if !self.booting.contains_key(&i)
                && !self.instance_node.contains_key(&i)
                && !self.terminated.contains_key(&i)
            {
                self.terminated.insert(i.clone(), now_ms);
                self.out.push(Command::TerminateInstance {
                    instance: i,
                    reason: TerminateReason::Unknown,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::cluster::ClusterSpec;
    use crate::controller::{ControllerConfig, Event, PoolSpec};
    use crate::ids::JobId;
    use crate::job::{BatchSpec, JobKind, JobSpec};
    use crate::resources::{Resources, TaskShape};

    /// A node scale-down terminated, still shown running by a listing (taken before the
    /// driver carried the termination out, or stepped in the very step whose timers
    /// terminated it), is not a stranger to terminate twice; still listed after
    /// `TERMINATE_RETRY_MS`, it is terminated again.
    #[test]
    fn an_instance_being_terminated_is_not_a_stranger() {
        let pool = PoolSpec {
            name: "p".into(),
            tier: Default::default(),
            instance_types: vec!["m5.large".into()],
            zones: vec!["z".into()],
            min_nodes: 0,
            max_nodes: 1,
            autoscale: Some(true),
            idle_nodes_min: 0,
            idle_nodes_max: 0,
            scale_down_idle_ms: 0,
            disruption_budget: Default::default(),
            zone_max_skew: 1,
            capacity_type: Default::default(),
        };
        let mut cfg = ControllerConfig {
            pools: vec![pool],
            ..ControllerConfig::default()
        };
        cfg.autoscale.interval_ms = 1_000;
        let mut c = Controller::new(cfg, Catalog::ec2(), &ClusterSpec::default(), 1).unwrap();
        let spec = JobSpec {
            name: "j".into(),
            owner: String::new(),
            tier: Default::default(),
            capacity_group: "g".into(),
            kind: JobKind::Batch(BatchSpec {
                size: 1,
                runtime_limit_ms: None,
                retry: Default::default(),
                gang: false,
            }),
            task: TaskShape::new(Resources::new(1_000, 1_000, 0, 0)),
            constraints: Default::default(),
            container: None,
        };
        let ev = Event::JobSubmitted {
            job: JobId(1),
            spec,
            requested_runtime_ms: None,
        };
        c.step(0, ev);
        let request = c
            .step(1_000, Event::Tick)
            .into_iter()
            .find_map(|cmd| match cmd {
                Command::ProvisionInstances { request, .. } => Some(request),
                _ => None,
            })
            .expect("provisioned");
        let i = InstanceId("i-1".into());
        let ev = Event::InstanceLaunched {
            request,
            instance: i.clone(),
        };
        c.step(1_100, ev);
        let node =
            Catalog::ec2()
                .get("m5.large")
                .unwrap()
                .node_spec(NodeId(0), "n".into(), "z", "p");
        let cmds = c.step(
            1_200,
            Event::NodeReady {
                node,
                instance: Some(i.clone()),
            },
        );
        let task = cmds
            .iter()
            .find_map(|cmd| match cmd {
                Command::LaunchTask { task, .. } => Some(*task),
                _ => None,
            })
            .expect("launched");
        c.step(1_300, Event::TaskStarted { task });
        let ev = Event::TaskExited {
            task,
            exit_code: 0,
            oom: false,
        };
        c.step(1_400, ev);
        let terminations = |cmds: &[Command]| {
            cmds.iter()
                .filter(|cmd| matches!(cmd, Command::TerminateInstance { .. }))
                .count()
        };
        // The autoscaler's timer fires inside the listing's step: scale-down terminates the
        // idle node, and the listing (taken before) still shows it.
        let listing = || Event::ReconcileInstances {
            instances: vec![InstanceId("i-1".into())],
        };
        let cmds = c.step(2_000, listing());
        assert_eq!(terminations(&cmds), 1, "{cmds:?}");
        let cmds = c.step(2_100, listing());
        assert_eq!(terminations(&cmds), 0, "{cmds:?}");
        // Still running a minute later: the termination failed; asked again.
        let cmds = c.step(2_000 + TERMINATE_RETRY_MS, listing());
        assert_eq!(terminations(&cmds), 1, "{cmds:?}");
    }
}
