//! Reconciliation: converging to what is actually running.
//!
//! Drivers lose messages, agents restart, instances vanish. A reconciliation event carries the
//! actual set of containers on a node (or of instances in the account); the controller kills
//! what it does not know and marks lost what it knows but is missing.

use super::{Command, Controller, InstanceId, TerminateReason};
use crate::ids::{NodeId, TaskId};
use crate::job::{TaskReason, TaskState};
use std::collections::BTreeSet;

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
        // Listed but unknown: terminated, unless a request may still report it.
        if !self.provisions.is_empty() {
            return;
        }
        for i in listed {
            if !self.booting.contains_key(&i) && !self.instance_node.contains_key(&i) {
                self.out.push(Command::TerminateInstance {
                    instance: i,
                    reason: TerminateReason::Unknown,
                });
            }
        }
    }
}
