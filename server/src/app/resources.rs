//! Service owners and resources: registering, configuring, the operator's approvals.

use storage::model::*;

use super::context::*;
use crate::auth::{Caller, SCOPE_READ, SCOPE_SERVICE_OWNER, SCOPE_WRITE};
use crate::error::ApiError;

type Result<T, E = ApiError> = std::result::Result<T, E>;

impl App {
    /// Registers the caller's organisation as a service owner.
    pub async fn register_service_owner(&self, caller: &Caller, name: String) -> Result<()> {
        require_scope(caller, &[SCOPE_SERVICE_OWNER])?;
        let org = caller_org(caller)?;
        if name.trim().is_empty() {
            return Err(ApiError::invalid("name is required"));
        }
        let owner = ServiceOwner { id: org, name, created: self.now() };
        match self.storage.create_service_owner(owner).await {
            Err(storage::Error::AlreadyExists(_)) => Err(ApiError::altinn(7002)),
            other => Ok(other?),
        }
    }

    /// The caller's service owner record.
    pub fn service_owner(&self, caller: &Caller) -> Result<ServiceOwner> {
        require_scope(caller, &[SCOPE_SERVICE_OWNER])?;
        let org = caller_org(caller)?;
        self.storage.service_owner(&org)?.ok_or_else(|| ApiError::altinn(7004))
    }

    /// Creates or changes a resource the caller owns.
    pub async fn put_resource(
        &self,
        caller: &Caller,
        id: &str,
        update: ResourceUpdate,
    ) -> Result<ResourceConfig> {
        require_scope(caller, &[SCOPE_SERVICE_OWNER])?;
        let org = caller_org(caller)?;
        let id = ResourceId::parse_bare(id).map_err(|e| ApiError::invalid(e.to_string()))?;
        if self.storage.service_owner(&org)?.is_none() {
            return Err(ApiError::altinn(24));
        }
        let now = self.now();
        let resource_id = id.clone();
        // The operator's approval for unscanned transfers lets the resource allow more than a
        // scanned file may be (error 13 otherwise); it is configuration, never stored.
        let approved = self.options.unscanned_resources.contains(&id.to_string());
        let result = self
            .storage
            .modify_resource(id, move |current| {
                let mut resource = match current {
                    Some(r) if r.service_owner != org => {
                        return Err(storage::Error::NotFound("owner".into()));
                    }
                    Some(r) => r,
                    None => ResourceConfig::new(resource_id.clone(), org.clone(), now),
                };
                let stored = resource.approved_for_disabled_virus_scan;
                resource.approved_for_disabled_virus_scan = stored || approved;
                resource.apply(update.clone())?;
                resource.approved_for_disabled_virus_scan = stored;
                Ok(resource)
            })
            .await;
        match result {
            // Someone else's resource: no rights (Altinn 401/6).
            Err(storage::Error::NotFound(_)) => Err(ApiError::altinn(6)),
            other => Ok(other?),
        }
    }

    /// A resource the caller owns.
    pub fn resource(&self, caller: &Caller, id: &str) -> Result<ResourceConfig> {
        require_scope(caller, &[SCOPE_SERVICE_OWNER])?;
        let org = caller_org(caller)?;
        let id = ResourceId::parse_bare(id).map_err(|e| ApiError::invalid(e.to_string()))?;
        let resource = self.storage.resource(&id)?.ok_or_else(|| ApiError::altinn(25))?;
        if resource.service_owner != org {
            return Err(ApiError::altinn(6));
        }
        Ok(self.with_operator_approval(resource))
    }

    /// The resources the caller's organisation owns or may send or receive on: what a person
    /// picks from (the web console); every operation on them still checks its own rights.
    pub fn visible_resources(&self, caller: &Caller) -> Result<Vec<ResourceConfig>> {
        require_scope(caller, &[SCOPE_SERVICE_OWNER, SCOPE_WRITE, SCOPE_READ])?;
        let org = caller_org(caller)?;
        Ok(self
            .storage
            .resources()?
            .into_iter()
            .filter(|r| r.service_owner == org || r.may_send(&org) || r.may_receive(&org))
            .map(|r| self.with_operator_approval(r))
            .collect())
    }

    /// `resource` with the operator's approval for unscanned transfers applied.
    pub(super) fn with_operator_approval(&self, mut resource: ResourceConfig) -> ResourceConfig {
        let id = resource.id.to_string();
        if self.options.unscanned_resources.contains(&id) {
            resource.approved_for_disabled_virus_scan = true;
        }
        resource
    }
}
