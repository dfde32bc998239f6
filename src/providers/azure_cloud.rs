//! Hosts and scopes of the Azure clouds.

use crate::api::common::AzureCloud;

/// Hosts and scopes of one Azure cloud.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloudEndpoints {
    /// Microsoft Entra login host (authority), without a trailing slash.
    pub authority_host: &'static str,
    /// Azure Resource Manager endpoint, without a trailing slash.
    pub resource_manager: &'static str,
    /// `.default` scope for Azure Resource Manager tokens.
    pub resource_manager_scope: &'static str,
}

/// The endpoints of `cloud`.
pub fn endpoints(cloud: AzureCloud) -> CloudEndpoints {
    match cloud {
        AzureCloud::AzurePublic => CloudEndpoints {
            authority_host: "https://login.microsoftonline.com",
            resource_manager: "https://management.azure.com",
            resource_manager_scope: "https://management.azure.com/.default",
        },
        AzureCloud::AzureUsGovernment => CloudEndpoints {
            authority_host: "https://login.microsoftonline.us",
            resource_manager: "https://management.usgovcloudapi.net",
            resource_manager_scope: "https://management.usgovcloudapi.net/.default",
        },
        AzureCloud::AzureChina => CloudEndpoints {
            authority_host: "https://login.chinacloudapi.cn",
            resource_manager: "https://management.chinacloudapi.cn",
            resource_manager_scope: "https://management.chinacloudapi.cn/.default",
        },
    }
}

/// Default Microsoft Fabric API endpoint.
pub const FABRIC_ENDPOINT: &str = "https://api.fabric.microsoft.com";
/// `.default` scope for Microsoft Fabric tokens.
pub const FABRIC_SCOPE: &str = "https://api.fabric.microsoft.com/.default";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::endpoint::{EndpointPolicy, Service};

    #[test]
    fn every_cloud_default_passes_the_default_policy() {
        let p = EndpointPolicy::default();
        for cloud in [
            AzureCloud::AzurePublic,
            AzureCloud::AzureUsGovernment,
            AzureCloud::AzureChina,
        ] {
            let e = endpoints(cloud);
            assert!(
                p.check_str(Service::EntraId, e.authority_host).is_ok(),
                "{cloud:?}"
            );
            assert!(
                p.check_str(Service::AzureResourceManager, e.resource_manager)
                    .is_ok()
            );
            assert!(e.resource_manager_scope.starts_with(e.resource_manager));
        }
        assert!(p.check_str(Service::Fabric, FABRIC_ENDPOINT).is_ok());
    }
}
