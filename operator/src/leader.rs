//! Leader election on a `coordination.k8s.io/v1` Lease, so that only one operator replica writes.
//! Every write is conditional on the resourceVersion read just before it: two replicas racing for
//! an expired lease cannot both win.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// One replica's handle on the lease.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

impl LeaseLock {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        LeaseLock {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
        }
    }

    fn spec(&self, now: Timestamp, acquired: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Takes the lease if it is free or expired, renews it if held: `true` while this replica leads.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<bool, LeaderError> {
        // Permission: rbac::LEASES.
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error.into()),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = if holder == self.identity {
            let acquired = spec.acquire_time.map_or(now, |t| t.0);
            self.spec(now, acquired, transitions)
        } else {
            let expires = spec.renew_time.map(|t| {
                t.0 + SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)))
            });
            let free = holder.is_empty() || expires.is_none_or(|e| e <= now);
            if !free {
                return Ok(false);
            }
            self.spec(now, now, transitions + 1)
        };
        lease.spec = Some(next);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if is_conflict(&error) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Gives the lease up on shutdown, so another replica takes over at once instead of after
    /// the lease expires.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_conflict(&error) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn locks() -> (LeaseLock, LeaseLock, Api<Lease>) {
        let client = kube_fake_client::ClientBuilder::new()
            .build()
            .await
            .unwrap();
        let api = Api::<Lease>::namespaced(client, "fastvirt-system");
        let duration = Duration::from_secs(15);
        (
            LeaseLock::new(api.clone(), "fastvirt-operator", "a", duration),
            LeaseLock::new(api.clone(), "fastvirt-operator", "b", duration),
            api,
        )
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[tokio::test]
    async fn one_leader_until_its_lease_expires() {
        let (a, b, api) = locks().await;
        assert!(a.try_acquire_or_renew(at(0)).await.unwrap());
        assert!(!b.try_acquire_or_renew(at(1)).await.unwrap());
        assert!(a.try_acquire_or_renew(at(10)).await.unwrap(), "renewal");
        assert!(
            !b.try_acquire_or_renew(at(24)).await.unwrap(),
            "renewed at 10, valid until 25"
        );
        assert!(
            b.try_acquire_or_renew(at(26)).await.unwrap(),
            "expired: taken over"
        );
        assert!(
            !a.try_acquire_or_renew(at(27)).await.unwrap(),
            "the old leader lost it"
        );
        let spec = api.get("fastvirt-operator").await.unwrap().spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(1));
        assert_eq!(spec.acquire_time.unwrap().0, at(26));
    }

    #[tokio::test]
    async fn a_released_lease_is_taken_at_once() {
        let (a, b, _) = locks().await;
        assert!(a.try_acquire_or_renew(at(0)).await.unwrap());
        b.release().await.unwrap();
        assert!(
            !b.try_acquire_or_renew(at(1)).await.unwrap(),
            "b cannot release a's lease"
        );
        a.release().await.unwrap();
        assert!(b.try_acquire_or_renew(at(2)).await.unwrap());
    }
}
