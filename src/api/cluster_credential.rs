//! `ClusterCredential`: provider credentials the platform team holds in the operator's credential
//! namespace and shares with chosen namespaces, whose resources name it with
//! `credentialRef: {name}` instead of holding the credential themselves.

// kube's `printcolumn(...)` attributes repeat `type_ = ...`, which clippy mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use crate::api::common::*;
use crate::api::livy_token::LivyToken;
use crate::api::notebook_token_request::NotebookTokenRequest;
use crate::api::workspace_view::{DataRobotAuthScheme, WorkspaceView};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most entries in `allowedNamespaces.names`.
pub const MAX_ALLOWED_NAMES: usize = 1000;

/// Provider credentials held by the platform team in the operator's credential namespace, for
/// the namespaces it allows.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "workspaceaccess.io",
    version = "v1alpha1",
    kind = "ClusterCredential",
    status = "ClusterCredentialStatus",
    shortname = "ccred",
    category = "workspaceaccess",
    doc = "Provider credentials the platform team keeps in the operator's credential namespace; resources in the namespaces it allows use them with credentialRef, without ever holding the credential.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".status.provider"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#
    ),
    printcolumn(name = "Used By", type_ = "integer", json_path = ".status.usedBy"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = 1,
        json_path = r#".status.conditions[?(@.type=="Ready")].message"#
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.azure) ? (!has(self.alibaba) && !has(self.dataRobot)) : (has(self.alibaba) ? !has(self.dataRobot) : has(self.dataRobot))",
    "message": "set exactly one of azure, alibaba or dataRobot"
}]))]
pub struct ClusterCredentialSpec {
    /// Microsoft Entra credentials, for NotebookTokenRequests and Fabric WorkspaceViews. The
    /// client secret's Secret is in the operator's credential namespace. Exactly one of azure,
    /// alibaba and dataRobot is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureCredentials>,
    /// Alibaba Cloud credentials, for LivyTokens. The AccessKey's Secret is in the operator's
    /// credential namespace. Exactly one of azure, alibaba and dataRobot is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alibaba: Option<AlibabaCredentials>,
    /// A DataRobot API token, for DataRobot WorkspaceViews. Its Secret is in the operator's
    /// credential namespace. Exactly one of azure, alibaba and dataRobot is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_robot: Option<DataRobotCredentials>,
    /// The namespaces whose resources may use this credential: those listed by name and those
    /// whose labels match the selector. Nothing listed: no namespace may.
    #[serde(default)]
    pub allowed_namespaces: AllowedNamespaces,
}

/// A DataRobot API token and how it is sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataRobotCredentials {
    /// Secret key holding the DataRobot API token, in the operator's credential namespace.
    pub api_token_ref: SecretKeyRef,
    /// Authorization scheme: Token (API keys, the default) or Bearer (OAuth access tokens).
    #[serde(default)]
    pub auth_scheme: DataRobotAuthScheme,
}

/// Which namespaces may use a ClusterCredential.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    /// Namespaces allowed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 1000),
        inner(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub names: Vec<String>,
    /// Namespaces allowed by their labels (a Kubernetes label selector over Namespace labels).
    /// An empty selector ({}) matches every namespace, as label selectors do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<NamespaceSelector>,
}

/// A label selector over Namespace labels.
pub type NamespaceSelector = LabelSelector;

impl LabelSelector {
    /// Why the selector is malformed (In/NotIn without values, Exists/DoesNotExist with
    /// values, an empty key), if it is.
    pub fn problem(&self) -> Option<String> {
        if self.match_labels.keys().any(String::is_empty) {
            return Some("matchLabels has an empty key".into());
        }
        for (i, r) in self.match_expressions.iter().enumerate() {
            let with_values = matches!(r.operator, LabelOperator::In | LabelOperator::NotIn);
            if r.key.is_empty() {
                return Some(format!("matchExpressions[{i}].key is empty"));
            }
            if with_values && r.values.is_empty() {
                return Some(format!(
                    "matchExpressions[{i}]: {:?} needs at least one value",
                    r.operator
                ));
            }
            if !with_values && !r.values.is_empty() {
                return Some(format!(
                    "matchExpressions[{i}]: {:?} takes no values",
                    r.operator
                ));
            }
        }
        None
    }

    /// Whether labels match. A malformed selector matches nothing.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        if self.problem().is_some() {
            return false;
        }
        let labels_ok = self
            .match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v));
        labels_ok
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    LabelOperator::In => value.is_some_and(|v| r.values.contains(v)),
                    LabelOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    LabelOperator::Exists => value.is_some(),
                    LabelOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

impl AllowedNamespaces {
    /// Whether `namespace` may use the credential: listed by name, or its labels (`None`: not
    /// known, which matches no selector) match the selector.
    pub fn allows(&self, namespace: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.allows_by_name(namespace)
            || self
                .selector
                .as_ref()
                .zip(labels)
                .is_some_and(|(s, l)| s.matches(l))
    }

    /// Whether `namespace` is listed by name (then its labels don't matter).
    pub fn allows_by_name(&self, namespace: &str) -> bool {
        self.names.iter().any(|n| n == namespace)
    }

    /// Why the list is malformed, if it is.
    pub fn problem(&self) -> Option<String> {
        if self.names.len() > MAX_ALLOWED_NAMES {
            return Some(format!(
                "allowedNamespaces.names has {} entries, at most {MAX_ALLOWED_NAMES} are allowed",
                self.names.len()
            ));
        }
        if let Some(bad) = self
            .names
            .iter()
            .find(|n| !crate::api::names::is_namespace_name(n))
        {
            return Some(format!(
                "allowedNamespaces.names: {:?} is not a namespace name",
                bad.chars().take(100).collect::<String>()
            ));
        }
        self.selector
            .as_ref()
            .and_then(NamespaceSelector::problem)
            .map(|p| format!("allowedNamespaces.selector: {p}"))
    }
}

/// The provider a ClusterCredential holds credentials for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialProvider {
    /// Microsoft Entra ID (Azure Machine Learning, Microsoft Fabric).
    Azure,
    /// Alibaba Cloud (EMR Serverless Spark).
    Alibaba,
    /// DataRobot.
    DataRobot,
}

impl CredentialProvider {
    /// The name `status.provider` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialProvider::Azure => "Azure",
            CredentialProvider::Alibaba => "Alibaba",
            CredentialProvider::DataRobot => "DataRobot",
        }
    }
}

/// The credentials of a ClusterCredential, once validated: exactly one provider's block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderCredentials<'a> {
    /// `spec.azure`.
    Azure(&'a AzureCredentials),
    /// `spec.alibaba`.
    Alibaba(&'a AlibabaCredentials),
    /// `spec.dataRobot`.
    DataRobot(&'a DataRobotCredentials),
}

impl ProviderCredentials<'_> {
    /// Whose credentials these are.
    pub fn provider(&self) -> CredentialProvider {
        match self {
            ProviderCredentials::Azure(_) => CredentialProvider::Azure,
            ProviderCredentials::Alibaba(_) => CredentialProvider::Alibaba,
            ProviderCredentials::DataRobot(_) => CredentialProvider::DataRobot,
        }
    }
}

impl ClusterCredentialSpec {
    /// The one provider block, or why there is not exactly one.
    pub fn credentials(&self) -> Result<ProviderCredentials<'_>, String> {
        match (&self.azure, &self.alibaba, &self.data_robot) {
            (Some(a), None, None) => Ok(ProviderCredentials::Azure(a)),
            (None, Some(a), None) => Ok(ProviderCredentials::Alibaba(a)),
            (None, None, Some(d)) => Ok(ProviderCredentials::DataRobot(d)),
            (None, None, None) => {
                Err("set one of spec.azure, spec.alibaba or spec.dataRobot".into())
            }
            _ => Err("set only one of spec.azure, spec.alibaba and spec.dataRobot".into()),
        }
    }

    /// The Secret names the credentials read, in the credential namespace (none for pod
    /// identity or an inconsistent spec).
    pub fn secret_names(&self) -> Vec<&str> {
        let mut out = vec![];
        if let Some(r) = self
            .azure
            .as_ref()
            .and_then(|a| a.client_secret_ref.as_ref())
        {
            out.push(r.name.as_str());
        }
        if let Some(r) = self
            .alibaba
            .as_ref()
            .and_then(|a| a.access_key_ref.as_ref())
        {
            out.push(r.name.as_str());
        }
        if let Some(d) = &self.data_robot {
            out.push(d.api_token_ref.name.as_str());
        }
        out
    }
}

/// Observed state of a ClusterCredential. Never contains a credential value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCredentialStatus {
    /// Azure, Alibaba or DataRobot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// How many resources name this ClusterCredential in their credentialRef (allowed or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by: Option<i64>,
    /// The generation of the spec the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions; Ready is True (reason Valid) when the spec is valid and its Secret and keys
    /// exist; else False with reason CredentialsNotFound or InvalidSpec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The kinds that may name a ClusterCredential.
pub trait CredentialUser {
    /// The name of the ClusterCredential the resource's spec names, if any.
    fn credential_ref(&self) -> Option<&str>;
}

impl CredentialUser for NotebookTokenRequest {
    fn credential_ref(&self) -> Option<&str> {
        self.spec.credential_ref.as_ref().map(|r| r.name.as_str())
    }
}

impl CredentialUser for LivyToken {
    fn credential_ref(&self) -> Option<&str> {
        self.spec.credential_ref.as_ref().map(|r| r.name.as_str())
    }
}

impl CredentialUser for WorkspaceView {
    fn credential_ref(&self) -> Option<&str> {
        let fabric = self
            .spec
            .fabric
            .as_ref()
            .and_then(|f| f.credential_ref.as_ref());
        let datarobot = self
            .spec
            .data_robot
            .as_ref()
            .and_then(|d| d.credential_ref.as_ref());
        fabric.or(datarobot).map(|r| r.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn allowed(v: serde_json::Value) -> AllowedNamespaces {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn namespaces_match_by_name_by_selector_by_both_or_not_at_all() {
        let team = labels(&[("workspaceaccess.io/azure-ml", "true"), ("tier", "prod")]);
        let other = labels(&[("tier", "dev")]);

        // Neither: nothing listed, no namespace may.
        let none = AllowedNamespaces::default();
        assert!(!none.allows("team-a", Some(&team)));
        assert!(!none.allows("team-a", None));

        // Names only.
        let names = allowed(json!({"names": ["team-a", "team-b"]}));
        assert!(names.allows("team-a", None));
        assert!(names.allows("team-b", Some(&other)));
        assert!(!names.allows("team-c", Some(&team)), "labels don't matter");
        assert!(!names.allows("team", None), "no prefix match");

        // Selector only.
        let selector =
            allowed(json!({"selector": {"matchLabels": {"workspaceaccess.io/azure-ml": "true"}}}));
        assert!(selector.allows("anything", Some(&team)));
        assert!(!selector.allows("anything", Some(&other)));
        assert!(
            !selector.allows("anything", None),
            "unknown labels match nothing"
        );

        // Both: either one allows.
        let both = allowed(json!({"names": ["legacy"],
            "selector": {"matchLabels": {"workspaceaccess.io/azure-ml": "true"}}}));
        assert!(both.allows("legacy", Some(&other)));
        assert!(both.allows("team-a", Some(&team)));
        assert!(!both.allows("team-c", Some(&other)));

        // An empty selector matches every namespace whose labels are known.
        let all = allowed(json!({"selector": {}}));
        assert!(all.allows("x", Some(&BTreeMap::new())));
        assert!(!all.allows("x", None));
    }

    #[test]
    fn selector_expressions_follow_kubernetes_semantics() {
        let sel = |exprs: serde_json::Value| -> NamespaceSelector {
            serde_json::from_value(json!({"matchExpressions": exprs})).unwrap()
        };
        let prod = labels(&[("tier", "prod"), ("team", "a")]);
        let bare = BTreeMap::new();
        let cases = [
            (
                json!([{"key": "tier", "operator": "In", "values": ["prod", "stage"]}]),
                true,
                false,
            ),
            (
                json!([{"key": "tier", "operator": "NotIn", "values": ["prod"]}]),
                false,
                true,
            ),
            (json!([{"key": "team", "operator": "Exists"}]), true, false),
            (
                json!([{"key": "team", "operator": "DoesNotExist"}]),
                false,
                true,
            ),
            (
                json!([{"key": "tier", "operator": "In", "values": ["prod"]},
                       {"key": "team", "operator": "NotIn", "values": ["a"]}]),
                false,
                false,
            ),
        ];
        for (exprs, on_prod, on_bare) in cases {
            let s = sel(exprs.clone());
            assert_eq!(s.problem(), None, "{exprs}");
            assert_eq!(s.matches(&prod), on_prod, "{exprs} on prod");
            assert_eq!(s.matches(&bare), on_bare, "{exprs} on no labels");
        }
        // Malformed selectors are reported and match nothing, not everything.
        for bad in [
            json!([{"key": "tier", "operator": "In"}]),
            json!([{"key": "tier", "operator": "DoesNotExist", "values": ["x"]}]),
            json!([{"key": "", "operator": "Exists"}]),
        ] {
            let s = sel(bad.clone());
            assert!(s.problem().is_some(), "{bad}");
            assert!(!s.matches(&bare) && !s.matches(&prod), "{bad}");
        }
    }

    #[test]
    fn exactly_one_provider_block() {
        let spec =
            |v: serde_json::Value| -> ClusterCredentialSpec { serde_json::from_value(v).unwrap() };
        let azure = json!({"tenantId": "t.example.com", "clientId": "11111111-1111-1111-1111-111111111111",
                           "clientSecretRef": {"name": "sp", "key": "clientSecret"}});
        let alibaba = json!({"accessKeyRef": {"name": "ak"}});
        let dr = json!({"apiTokenRef": {"name": "dr", "key": "apiToken"}});
        assert_eq!(
            spec(json!({"azure": azure}))
                .credentials()
                .unwrap()
                .provider(),
            CredentialProvider::Azure
        );
        assert_eq!(
            spec(json!({"alibaba": alibaba}))
                .credentials()
                .unwrap()
                .provider(),
            CredentialProvider::Alibaba
        );
        let d = spec(json!({"dataRobot": dr}));
        assert_eq!(
            d.credentials().unwrap().provider(),
            CredentialProvider::DataRobot
        );
        assert_eq!(d.secret_names(), ["dr"]);
        assert!(
            spec(json!({}))
                .credentials()
                .unwrap_err()
                .contains("set one of")
        );
        assert!(
            spec(json!({"azure": azure, "dataRobot": dr}))
                .credentials()
                .unwrap_err()
                .contains("only one")
        );
        assert!(
            spec(json!({"alibaba": {"rrsa": true}}))
                .secret_names()
                .is_empty()
        );
    }

    #[test]
    fn allowed_names_must_be_namespace_names() {
        assert_eq!(allowed(json!({"names": ["team-a"]})).problem(), None);
        let p = allowed(json!({"names": ["team-a", "Team_B"]}))
            .problem()
            .unwrap();
        assert!(p.contains("\"Team_B\""), "{p}");
        let p =
            allowed(json!({"selector": {"matchExpressions": [{"key": "k", "operator": "In"}]}}))
                .problem()
                .unwrap();
        assert!(p.starts_with("allowedNamespaces.selector"), "{p}");
    }

    #[test]
    fn each_kind_takes_exactly_one_of_its_inline_block_and_credential_ref() {
        let r = json!({"name": "c"});
        let azure = json!({"tenantId": "t.example.com",
                           "clientId": "11111111-1111-1111-1111-111111111111",
                           "workloadIdentity": true});
        let ntr = |extra: serde_json::Value| {
            let mut spec = json!({"subscriptionId": "00000000-1111-2222-3333-444444444444",
                                  "resourceGroup": "rg", "workspaceName": "ws"});
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value::<crate::api::NotebookTokenRequestSpec>(spec)
                .unwrap()
                .credentials()
                .map(|c| matches!(c, CredentialChoice::Cluster(_)))
        };
        assert_eq!(ntr(json!({"credentialRef": r})), Ok(true));
        assert_eq!(ntr(json!({"azure": azure})), Ok(false));
        let both = ntr(json!({"azure": azure, "credentialRef": r})).unwrap_err();
        assert_eq!(
            both,
            "set either spec.azure or spec.credentialRef, not both"
        );
        let neither = ntr(json!({})).unwrap_err();
        assert!(
            neither
                .contains("set spec.azure (credentials in this namespace) or spec.credentialRef")
        );

        let livy = |extra: serde_json::Value| {
            let mut spec = json!({"regionId": "cn-hangzhou", "workspaceId": "w", "livyComputeId": "l",
                                  "tokenId": "t"});
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value::<crate::api::LivyTokenSpec>(spec)
                .unwrap()
                .credentials()
                .map(|_| ())
        };
        assert!(livy(json!({"credentialRef": r})).is_ok());
        assert!(livy(json!({"alibaba": {"rrsa": true}})).is_ok());
        assert!(
            livy(json!({"alibaba": {"rrsa": true}, "credentialRef": r}))
                .unwrap_err()
                .contains("not both")
        );
        assert!(livy(json!({})).unwrap_err().contains("spec.alibaba"));

        let fabric: crate::api::workspace_view::FabricSource =
            serde_json::from_value(json!({"azure": azure, "credentialRef": r})).unwrap();
        assert!(
            fabric
                .credentials()
                .unwrap_err()
                .contains("spec.fabric.credentialRef")
        );
        let dr: crate::api::workspace_view::DataRobotSource =
            serde_json::from_value(json!({"notebookIds": ["a"]})).unwrap();
        assert!(
            dr.credentials()
                .unwrap_err()
                .contains("spec.dataRobot.apiTokenRef")
        );
    }

    #[test]
    fn resources_name_their_credential() {
        let ntr: NotebookTokenRequest = serde_json::from_value(json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
            "metadata": {"name": "n", "namespace": "team-a"},
            "spec": {"subscriptionId": "00000000-1111-2222-3333-444444444444",
                     "resourceGroup": "rg", "workspaceName": "ws",
                     "credentialRef": {"name": "azure-ml-prod"}}
        }))
        .unwrap();
        assert_eq!(ntr.credential_ref(), Some("azure-ml-prod"));
        assert!(matches!(
            ntr.spec.credentials().unwrap(),
            CredentialChoice::Cluster(r) if r.name == "azure-ml-prod"
        ));
        let wsv: WorkspaceView = serde_json::from_value(json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
            "metadata": {"name": "w", "namespace": "team-a"},
            "spec": {"dataRobot": {"notebookIds": ["a"], "credentialRef": {"name": "dr"}}}
        }))
        .unwrap();
        assert_eq!(wsv.credential_ref(), Some("dr"));
        let err = {
            let mut d = wsv.spec.data_robot.clone().unwrap();
            d.auth_scheme = Some(DataRobotAuthScheme::Bearer);
            d.credentials().unwrap_err()
        };
        assert!(
            err.contains("authScheme comes from the ClusterCredential"),
            "{err}"
        );
    }
}
