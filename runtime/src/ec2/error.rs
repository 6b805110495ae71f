//! EC2 error codes as the controller's [`LaunchErrorKind`], and the driver's retry policy for
//! throttling (full-jitter exponential back-off from a seeded RNG: the jitter lives here, in the
//! driver, never in the solver).

use berth_solver::controller::LaunchErrorKind;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// A failed EC2 call, classified.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{action}: {code}: {message}")]
pub struct CloudError {
    pub action: &'static str,
    pub kind: LaunchErrorKind,
    /// The EC2 error code (`InsufficientInstanceCapacity`), or `dispatch` / `response` for
    /// failures before an answer.
    pub code: String,
    pub message: String,
}

impl CloudError {
    pub fn from_code(action: &'static str, code: &str, message: &str) -> CloudError {
        CloudError {
            action,
            kind: classify(code),
            code: code.to_string(),
            message: message.to_string(),
        }
    }

    /// From any SDK error: the service's code when there is one.
    pub fn from_sdk<E, R>(action: &'static str, e: &aws_sdk_ec2::error::SdkError<E, R>) -> Self
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        use aws_sdk_ec2::error::ProvideErrorMetadata;
        match e.code() {
            Some(code) => CloudError::from_code(action, code, e.message().unwrap_or("")),
            None => CloudError {
                action,
                kind: LaunchErrorKind::Other,
                code: "dispatch".into(),
                message: aws_sdk_ec2::error::DisplayErrorContext(e).to_string(),
            },
        }
    }

    pub fn is_throttled(&self) -> bool {
        self.kind == LaunchErrorKind::Throttled
    }
}

/// EC2 error code → what the controller plans around.
pub fn classify(code: &str) -> LaunchErrorKind {
    match code {
        // No capacity for this type in this zone (or the type is not offered there): the
        // controller avoids the pair for a cool-down and tries its next choice.
        "InsufficientInstanceCapacity"
        | "InsufficientHostCapacity"
        | "InsufficientCapacity"
        | "InsufficientReservedInstanceCapacity"
        | "MaxSpotInstanceCountExceeded"
        | "SpotMaxPriceTooLow"
        | "Unsupported" => LaunchErrorKind::InsufficientCapacity,
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "RequestThrottled" => {
            LaunchErrorKind::Throttled
        }
        "UnauthorizedOperation"
        | "AuthFailure"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "OptInRequired"
        | "Blocked"
        | "PendingVerification" => LaunchErrorKind::Unauthorized,
        _ => LaunchErrorKind::Other,
    }
}

/// Full-jitter exponential back-off: attempt `n` (0-based) sleeps uniformly in
/// `[0, min(max, initial * 2^n)]`.
pub struct Backoff {
    rng: rand_chacha::ChaCha8Rng,
    pub initial_ms: u64,
    pub max_ms: u64,
}

impl Backoff {
    pub fn new(seed: u64, initial_ms: u64, max_ms: u64) -> Backoff {
        Backoff {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            initial_ms: initial_ms.max(1),
            max_ms: max_ms.max(1),
        }
    }

    pub fn delay(&mut self, attempt: u32) -> Duration {
        let cap = self
            .initial_ms
            .saturating_mul(1u64 << attempt.min(30))
            .min(self.max_ms);
        Duration::from_millis(self.rng.random_range(0..=cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        assert_eq!(
            classify("InsufficientInstanceCapacity"),
            LaunchErrorKind::InsufficientCapacity
        );
        assert_eq!(classify("RequestLimitExceeded"), LaunchErrorKind::Throttled);
        assert_eq!(
            classify("UnauthorizedOperation"),
            LaunchErrorKind::Unauthorized
        );
        assert_eq!(classify("AuthFailure"), LaunchErrorKind::Unauthorized);
        assert_eq!(classify("InvalidParameterValue"), LaunchErrorKind::Other);
    }

    #[test]
    fn backoff_is_bounded_and_seeded() {
        let mut a = Backoff::new(9, 100, 1_000);
        let mut b = Backoff::new(9, 100, 1_000);
        for n in 0..12 {
            let d = a.delay(n);
            assert_eq!(d, b.delay(n));
            assert!(d <= Duration::from_millis((100u64 << n.min(30)).min(1_000)));
        }
    }
}
