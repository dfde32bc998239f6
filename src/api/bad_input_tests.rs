//! Bad input, table-driven, at both layers: what the CRD schema refuses (checked with the
//! schema validator of `schema_tests`; one-of rules are CEL, which that validator doesn't run,
//! so their presence is checked instead), and what the reconciler refuses on its own, through
//! `preview` (which skips the API server, as a resource stored before a schema change would).
//!
//! Every resource points at a mock provider that answers 500 to anything: a refused input must
//! end as `InvalidSpec` (or `EndpointNotAllowed`) with a message naming the field, and with no
//! request sent. The unmodified resources reach the mock, so each refusal is its edit's doing.

use super::schema_tests::validate_manifest;
use crate::controller::Settings;
use crate::metrics::Metrics;
use crate::providers::endpoint::EndpointPolicy;
use crate::providers::http::{HttpClient, HttpOptions};
use httpmock::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Base {
    Ntr,
    Livy,
    Fabric,
    DataRobot,
}

/// What the CRD schema does with the input.
#[derive(Clone, Debug)]
enum Schema {
    /// The validator reports an error whose text contains this (e.g. the field).
    Refuses(String),
    /// A one-of: the CEL rule on the object at this JSON path of the schema exists.
    Cel(&'static str, &'static str),
    /// The schema can't tell (e.g. a zero duration matches the pattern): the reconciler must.
    Accepts,
}

/// What the reconciler does with it (through `preview`).
#[derive(Clone, Debug)]
enum Outcome {
    /// Ready=False, reason InvalidSpec, the message contains all of these.
    Invalid(Vec<String>),
    /// Ready=False, reason EndpointNotAllowed, the message contains this.
    Endpoint(String),
    /// The document can't even be read as the kind (an unknown enum value): preview fails
    /// with this in the message. (The schema's enum keeps such values out of the cluster.)
    Unreadable(String),
}

use Schema::{Accepts, Cel};

fn refuses(what: &str) -> Schema {
    Schema::Refuses(what.to_owned())
}

fn invalid(parts: &[&str]) -> Outcome {
    Outcome::Invalid(parts.iter().map(|p| p.to_string()).collect())
}

fn endpoint(why: &str) -> Outcome {
    Outcome::Endpoint(why.to_owned())
}

fn unreadable(why: &str) -> Outcome {
    Outcome::Unreadable(why.to_owned())
}

/// An edit of the base document: set the value at the JSON pointer, or (None) remove it.
type Edit = (String, Option<Value>);

struct Case {
    base: Base,
    edits: Vec<Edit>,
    schema: Schema,
    outcome: Outcome,
}

fn set(pointer: &str, v: Value) -> Edit {
    (pointer.to_owned(), Some(v))
}

fn remove(pointer: &str) -> Edit {
    (pointer.to_owned(), None)
}

fn case(base: Base, edits: Vec<Edit>, schema: Schema, outcome: Outcome) -> Case {
    Case {
        base,
        edits,
        schema,
        outcome,
    }
}

fn manifest(base: Base, mock: &str) -> Value {
    let azure = json!({"tenantId": "00000000-0000-0000-0000-000000000000",
                       "clientId": "11111111-1111-1111-1111-111111111111",
                       "clientSecretRef": {"name": "azure-sp", "key": "clientSecret"},
                       "authorityHost": mock});
    let (kind, spec) = match base {
        Base::Ntr => (
            "NotebookTokenRequest",
            json!({"subscriptionId": "00000000-1111-2222-3333-444444444444",
                   "resourceGroup": "workspace-1234", "workspaceName": "testworkspace",
                   "endpoint": mock, "azure": azure, "secretName": "ml-token",
                   "renewBefore": "30m"}),
        ),
        Base::Livy => (
            "LivyToken",
            json!({"regionId": "cn-hangzhou", "workspaceId": "w-8adde60aa809701f",
                   "livyComputeId": "lc-6mkvn01zrg8rqhhv", "endpoint": mock,
                   "tokenId": "lctk-xxxxxxxx",
                   "alibaba": {"accessKeyRef": {"name": "ali-ak"}},
                   "secretName": "spark-token", "refreshInterval": "5m"}),
        ),
        Base::Fabric => (
            "WorkspaceView",
            json!({"refreshInterval": "15m", "maxItems": 500,
                   "fabric": {"roles": ["Admin"], "endpoint": mock, "azure": azure}}),
        ),
        Base::DataRobot => (
            "WorkspaceView",
            json!({"dataRobot": {"endpoint": format!("{mock}/api/v2"),
                                 "notebookIds": ["65f0aa", "65f0ab"],
                                 "apiTokenRef": {"name": "datarobot", "key": "apiToken"}}}),
        ),
    };
    json!({"apiVersion": "workspaceaccess.io/v1alpha1", "kind": kind,
           "metadata": {"name": "bad-input", "namespace": "team-a"}, "spec": spec})
}

fn credentials() -> Vec<Value> {
    let secret = |name: &str, data: Value| {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": name, "namespace": "team-a"}, "stringData": data})
    };
    vec![
        secret("azure-sp", json!({"clientSecret": "sp-secret"})),
        secret(
            "ali-ak",
            json!({"accessKeyId": "LTAI-id", "accessKeySecret": "ak-secret"}),
        ),
        secret("datarobot", json!({"apiToken": "dr-token"})),
    ]
}

fn apply(doc: &mut Value, (pointer, value): &Edit, mock: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = doc
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent}"));
    match value {
        Some(Value::String(v)) => parent[key] = Value::from(v.replace("MOCK", mock)),
        Some(v) => parent[key] = v.clone(),
        None => {
            parent.as_object_mut().unwrap().remove(key);
        }
    }
}

/// The schema node at a dotted path of properties, e.g. `spec.azure`.
fn schema_at<'a>(schema: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(schema, |node, p| &node["properties"][p])
}

fn schemas() -> Vec<(String, Value)> {
    super::crds()
        .into_iter()
        .map(|crd| {
            let v = crd.spec.versions[0].schema.clone().unwrap();
            (
                crd.spec.names.kind.clone(),
                serde_json::to_value(v.open_api_v3_schema.unwrap()).unwrap(),
            )
        })
        .collect()
}

/// Runs `preview` on the document with the credentials: (reason, message), or Err(message)
/// when the document can't be read as its kind.
async fn preview(doc: Value, mock_port: u16) -> Result<(String, String), String> {
    // One client for all cases (building one loads the TLS roots).
    static HTTP: std::sync::OnceLock<(Arc<Metrics>, HttpClient)> = std::sync::OnceLock::new();
    let (metrics, http) = HTTP
        .get_or_init(|| {
            let metrics = Arc::new(Metrics::new());
            let http = HttpClient::new(HttpOptions::default(), metrics.clone()).unwrap();
            (metrics, http)
        })
        .clone();
    let settings = Settings {
        endpoint_policy: EndpointPolicy::new(vec![
            format!("127.0.0.1:{mock_port}").parse().unwrap(),
        ]),
        ..Settings::default()
    };
    let mut docs = credentials();
    docs.push(doc);
    let report = crate::preview::preview_documents(docs, "team-a", settings, metrics, http)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let out: Value = serde_saphyr::from_str(&report.yaml).unwrap();
    Ok((
        out["reason"].as_str().unwrap().to_owned(),
        out["message"].as_str().unwrap().to_owned(),
    ))
}

fn ids(n: usize) -> Value {
    Value::from((0..n).map(|i| format!("nb{i}")).collect::<Vec<_>>())
}

fn cases() -> Vec<Case> {
    use Base::*;
    let s = |v: &str| json!(v);
    let mut c = vec![];
    // --- names that don't match their patterns; path and query tricks in path parameters ---
    for v in [
        "not-a-guid",
        "../x",
        "00000000-1111-2222-3333-444444444444/../x",
    ] {
        c.push(case(
            Ntr,
            vec![set("/spec/subscriptionId", s(v))],
            refuses("subscriptionId"),
            invalid(&["spec.subscriptionId", "GUID"]),
        ));
    }
    for v in [
        "..",
        ".",
        "rg/../other",
        "rg?x=1",
        "rg#f",
        "rg.",
        "",
        "rg\t",
        "r%2F",
    ] {
        c.push(case(
            Ntr,
            vec![set("/spec/resourceGroup", s(v))],
            refuses("resourceGroup"),
            invalid(&["spec.resourceGroup", "resource group name"]),
        ));
    }
    c.push(case(
        Ntr,
        vec![set("/spec/resourceGroup", json!("x".repeat(91)))],
        refuses("resourceGroup"),
        invalid(&["spec.resourceGroup"]),
    ));
    for v in [
        "ab",
        "../evil",
        "ws?api-version=1",
        "ws/../../x",
        "ws#x",
        "ws%2F..",
        ".\t.",
        "_abc",
    ] {
        c.push(case(
            Ntr,
            vec![set("/spec/workspaceName", s(v))],
            refuses("workspaceName"),
            invalid(&["spec.workspaceName", "workspace name"]),
        ));
    }
    for v in ["latest", "2024-04-01&x=1", "2024-04-01#", "2024-04-01-beta"] {
        c.push(case(
            Ntr,
            vec![set("/spec/apiVersion", s(v))],
            refuses("apiVersion"),
            invalid(&["spec.apiVersion", "api-version"]),
        ));
    }
    for (base, at) in [(Ntr, "spec.azure"), (Fabric, "spec.fabric.azure")] {
        let p = |rest: &str| format!("/{}{rest}", at.replace('.', "/"));
        let f = |rest: &str| format!("{at}{rest}");
        for v in [
            "common/../x",
            "t?x=1",
            "..",
            "t.example.com/x",
            "-bad.com",
            "tenant",
        ] {
            c.push(case(
                base,
                vec![set(&p("/tenantId"), s(v))],
                refuses("tenantId"),
                invalid(&[&f(".tenantId"), "Microsoft Entra tenant"]),
            ));
        }
        for v in ["not-a-guid", "11111111-1111-1111-1111-111111111111&scope=x"] {
            c.push(case(
                base,
                vec![set(&p("/clientId"), s(v))],
                refuses("clientId"),
                invalid(&[&f(".clientId"), "GUID"]),
            ));
        }
        for v in ["../other-ns/secrets/x", "Azure-SP", "sp/x", "sp?x", ".."] {
            c.push(case(
                base,
                vec![set(&p("/clientSecretRef/name"), s(v))],
                refuses("clientSecretRef.name"),
                invalid(&[&f(".clientSecretRef.name"), "this resource's namespace"]),
            ));
        }
        for v in ["client secret", "a/b", ""] {
            c.push(case(
                base,
                vec![set(&p("/clientSecretRef/key"), s(v))],
                refuses("clientSecretRef.key"),
                invalid(&[&f(".clientSecretRef.key"), "Secret key"]),
            ));
        }
        // Unknown cloud names: the schema's enum refuses them; they can't even be read.
        c.push(case(
            base,
            vec![set(&p("/cloud"), s("AzureGermany"))],
            refuses("cloud"),
            unreadable("unknown variant `AzureGermany`"),
        ));
        // Both or neither of clientSecretRef / workloadIdentity.
        let rule = "has(self.clientSecretRef) ? !(has(self.workloadIdentity) && self.workloadIdentity) : (has(self.workloadIdentity) && self.workloadIdentity)";
        c.push(case(
            base,
            vec![set(&p("/workloadIdentity"), json!(true))],
            Cel(at, rule),
            invalid(&[at, "not both"]),
        ));
        c.push(case(
            base,
            vec![remove(&p("/clientSecretRef"))],
            Cel(at, rule),
            invalid(&[at, "set clientSecretRef"]),
        ));
        c.push(case(
            base,
            vec![
                remove(&p("/clientSecretRef")),
                set(&p("/workloadIdentity"), json!(false)),
            ],
            Cel(at, rule),
            invalid(&[at, "set clientSecretRef"]),
        ));
        // An authority with a path or query (the schema allows scheme and host only), on an
        // allowed host.
        for v in ["/other-tenant/oauth2", "/?x=1"] {
            c.push(case(
                base,
                vec![set(&p("/authorityHost"), s(&format!("MOCK{v}")))],
                refuses("authorityHost"),
                invalid(&[&f(".authorityHost"), "scheme and host"]),
            ));
        }
    }
    for v in ["../x", "Token", "a/b", "x?y", "a..b"] {
        c.push(case(
            Ntr,
            vec![set("/spec/secretName", s(v))],
            refuses("secretName"),
            invalid(&["spec.secretName", "Secret name"]),
        ));
        c.push(case(
            Livy,
            vec![set("/spec/secretName", s(v))],
            refuses("secretName"),
            invalid(&["spec.secretName", "Secret name"]),
        ));
    }
    for v in [
        "cn-hangzhou.evil.com",
        "x/../y",
        "CN-HANGZHOU",
        "cn",
        "cn-hangzhou?x",
    ] {
        c.push(case(
            Livy,
            vec![set("/spec/regionId", s(v))],
            refuses("regionId"),
            invalid(&["spec.regionId", "region"]),
        ));
    }
    for (pointer, field) in [
        ("/spec/workspaceId", "spec.workspaceId"),
        ("/spec/livyComputeId", "spec.livyComputeId"),
        ("/spec/tokenId", "spec.tokenId"),
    ] {
        let short = field.trim_start_matches("spec.");
        for v in [
            "..",
            ".",
            "../../x",
            "w?regionId=x",
            "w#x",
            ".\t.",
            "w/x",
            "",
            "%2e%2e",
        ] {
            c.push(case(
                Livy,
                vec![set(pointer, s(v))],
                refuses(short),
                invalid(&[field, "EMR Serverless Spark ID"]),
            ));
        }
    }
    for v in ["../x", "a b", &"x".repeat(65), "-x"] {
        c.push(case(
            Livy,
            vec![
                remove("/spec/tokenId"),
                set("/spec/managed", json!({"name": v, "expireDays": 7})),
            ],
            refuses("managed.name"),
            invalid(&["spec.managed.name"]),
        ));
    }
    for v in [0, 366, -1] {
        c.push(case(
            Livy,
            vec![
                remove("/spec/tokenId"),
                set("/spec/managed", json!({"expireDays": v})),
            ],
            refuses("expireDays"),
            invalid(&["spec.managed.expireDays", "between 1 and 365"]),
        ));
    }
    for (pointer, key) in [
        ("/spec/alibaba/accessKeyRef/name", "accessKeyRef.name"),
        (
            "/spec/alibaba/accessKeyRef/accessKeyIdKey",
            "accessKeyRef.accessKeyIdKey",
        ),
        (
            "/spec/alibaba/accessKeyRef/accessKeySecretKey",
            "accessKeyRef.accessKeySecretKey",
        ),
        (
            "/spec/alibaba/accessKeyRef/securityTokenKey",
            "accessKeyRef.securityTokenKey",
        ),
    ] {
        c.push(case(
            Livy,
            vec![set(pointer, s("../other/x"))],
            refuses(key),
            invalid(&[&format!("spec.alibaba.{key}")]),
        ));
    }
    for v in [
        json!(["../x"]),
        json!(["a,b"]),
        json!(["a?b"]),
        json!(["."]),
        json!(["nb1", "a b"]),
    ] {
        c.push(case(
            DataRobot,
            vec![set("/spec/dataRobot/notebookIds", v)],
            refuses("notebookIds"),
            invalid(&["spec.dataRobot.notebookIds[", "DataRobot ID"]),
        ));
    }
    c.push(case(
        DataRobot,
        vec![set("/spec/dataRobot/notebookIds", json!([]))],
        refuses("too few items"),
        invalid(&["spec.dataRobot.notebookIds is empty"]),
    ));
    c.push(case(
        DataRobot,
        vec![set("/spec/dataRobot/notebookIds", ids(2001))],
        refuses("too many items"),
        invalid(&["spec.dataRobot.notebookIds has 2001 entries", "selector"]),
    ));
    let selector = |sel: Value| {
        vec![
            remove("/spec/dataRobot/notebookIds"),
            set("/spec/dataRobot/selector", sel),
        ]
    };
    c.push(case(
        DataRobot,
        selector(json!({"useCaseId": "../x"})),
        refuses("useCaseId"),
        invalid(&["spec.dataRobot.selector.useCaseId"]),
    ));
    c.push(case(
        DataRobot,
        selector(json!({"owners": ["u1", "a&b=c"]})),
        refuses("owners"),
        invalid(&["spec.dataRobot.selector.owners[1]"]),
    ));
    c.push(case(
        DataRobot,
        selector(json!({"owners": ids(101)})),
        refuses("too many items"),
        invalid(&["spec.dataRobot.selector.owners has 101 entries"]),
    ));
    c.push(case(
        DataRobot,
        selector(json!({"tags": [""]})),
        refuses("tags"),
        invalid(&["spec.dataRobot.selector.tags[0]"]),
    ));
    c.push(case(
        DataRobot,
        selector(json!({"query": ""})),
        refuses("query"),
        invalid(&["spec.dataRobot.selector.query"]),
    ));
    for (pointer, field) in [
        (
            "/spec/dataRobot/apiTokenRef/name",
            "spec.dataRobot.apiTokenRef.name",
        ),
        (
            "/spec/dataRobot/apiTokenRef/key",
            "spec.dataRobot.apiTokenRef.key",
        ),
    ] {
        c.push(case(
            DataRobot,
            vec![set(pointer, s("../x/y"))],
            refuses("apiTokenRef"),
            invalid(&[field]),
        ));
    }
    // --- unknown providers and enum values ---
    c.push(case(
        Fabric,
        vec![
            remove("/spec/fabric"),
            set("/spec/azureDevOps", json!({"organization": "x"})),
        ],
        refuses("unknown field azureDevOps"),
        invalid(&["set fabric or dataRobot"]),
    ));
    c.push(case(
        Fabric,
        vec![set("/spec/fabric/roles", json!(["Owner"]))],
        refuses("roles"),
        unreadable("unknown variant `Owner`"),
    ));
    c.push(case(
        Fabric,
        vec![set("/spec/fabric/roles", json!([]))],
        refuses("too few items"),
        invalid(&["spec.fabric.roles is empty"]),
    ));
    c.push(case(
        DataRobot,
        vec![set("/spec/dataRobot/authScheme", s("Basic"))],
        refuses("authScheme"),
        unreadable("unknown variant `Basic`"),
    ));
    // --- both or neither of each one-of ---
    let livy_mode = "has(self.tokenId) ? !has(self.managed) : has(self.managed)";
    c.push(case(
        Livy,
        vec![set("/spec/managed", json!({"expireDays": 7}))],
        Cel("spec", livy_mode),
        invalid(&["either tokenId or managed, not both"]),
    ));
    c.push(case(
        Livy,
        vec![remove("/spec/tokenId")],
        Cel("spec", livy_mode),
        invalid(&["set tokenId"]),
    ));
    let alibaba =
        "has(self.accessKeyRef) ? !(has(self.rrsa) && self.rrsa) : (has(self.rrsa) && self.rrsa)";
    c.push(case(
        Livy,
        vec![set("/spec/alibaba/rrsa", json!(true))],
        Cel("spec.alibaba", alibaba),
        invalid(&["alibaba: set either accessKeyRef or rrsa: true, not both"]),
    ));
    c.push(case(
        Livy,
        vec![remove("/spec/alibaba/accessKeyRef")],
        Cel("spec.alibaba", alibaba),
        invalid(&["alibaba: set accessKeyRef"]),
    ));
    let source = "has(self.fabric) ? !has(self.dataRobot) : has(self.dataRobot)";
    c.push(case(
        Fabric,
        vec![set(
            "/spec/dataRobot",
            json!({"notebookIds": ["a"], "apiTokenRef": {"name": "d", "key": "k"}}),
        )],
        Cel("spec", source),
        invalid(&["either fabric or dataRobot, not both"]),
    ));
    c.push(case(
        Fabric,
        vec![remove("/spec/fabric")],
        Cel("spec", source),
        invalid(&["set fabric or dataRobot"]),
    ));
    let selection = "has(self.notebookIds) ? !has(self.selector) : has(self.selector)";
    c.push(case(
        DataRobot,
        vec![set("/spec/dataRobot/selector", json!({"query": "x"}))],
        Cel("spec.dataRobot", selection),
        invalid(&["either notebookIds or selector, not both"]),
    ));
    c.push(case(
        DataRobot,
        vec![remove("/spec/dataRobot/notebookIds")],
        Cel("spec.dataRobot", selection),
        invalid(&["set notebookIds or selector"]),
    ));
    // --- inline credentials and credentialRef: exactly one ---
    let by_ref = json!({"name": "platform-credential"});
    let azure_or_ref = "has(self.azure) ? !has(self.credentialRef) : has(self.credentialRef)";
    for (base, at, inline, rule) in [
        (Ntr, "spec", "azure", azure_or_ref),
        (
            Livy,
            "spec",
            "alibaba",
            "has(self.alibaba) ? !has(self.credentialRef) : has(self.credentialRef)",
        ),
        (Fabric, "spec.fabric", "azure", azure_or_ref),
        (
            DataRobot,
            "spec.dataRobot",
            "apiTokenRef",
            "has(self.apiTokenRef) ? !has(self.credentialRef) : has(self.credentialRef)",
        ),
    ] {
        let pointer = format!("/{}", at.replace('.', "/"));
        c.push(case(
            base,
            vec![set(&format!("{pointer}/credentialRef"), by_ref.clone())],
            Cel(at, rule),
            invalid(&[&format!(
                "either {at}.{inline} or {at}.credentialRef, not both"
            )]),
        ));
        c.push(case(
            base,
            vec![remove(&format!("{pointer}/{inline}"))],
            Cel(at, rule),
            invalid(&[
                &format!("set {at}.{inline}"),
                &format!("or {at}.credentialRef"),
            ]),
        ));
    }
    c.push(case(
        DataRobot,
        vec![
            remove("/spec/dataRobot/apiTokenRef"),
            set("/spec/dataRobot/credentialRef", by_ref.clone()),
            set("/spec/dataRobot/authScheme", s("Bearer")),
        ],
        Cel(
            "spec.dataRobot",
            "!has(self.credentialRef) || !has(self.authScheme)",
        ),
        invalid(&["authScheme comes from the ClusterCredential"]),
    ));
    for v in ["../x", "Platform", "a/b"] {
        c.push(case(
            Ntr,
            vec![
                remove("/spec/azure"),
                set("/spec/credentialRef", json!({"name": v})),
            ],
            refuses("credentialRef.name"),
            invalid(&["spec.credentialRef.name", "ClusterCredential name"]),
        ));
    }
    // --- durations that don't parse, or are zero ---
    for (base, pointer, field) in [
        (Ntr, "/spec/renewBefore", "spec.renewBefore"),
        (Livy, "/spec/refreshInterval", "spec.refreshInterval"),
        (Livy, "/spec/renewBefore", "spec.renewBefore"),
        (Fabric, "/spec/refreshInterval", "spec.refreshInterval"),
    ] {
        let short = field.trim_start_matches("spec.");
        for zero in ["0s", "0h0m", "0.0001ns"] {
            c.push(case(
                base,
                vec![set(pointer, s(zero))],
                Accepts,
                invalid(&[field, "greater than zero"]),
            ));
        }
        // Matches the schema's pattern but is too large for the parser.
        c.push(case(
            base,
            vec![set(pointer, s("99999999999h"))],
            Accepts,
            invalid(&[field, "too large"]),
        ));
        for bad in ["1d", "-5m", "soon", "30", "1h 30m", ""] {
            c.push(case(
                base,
                vec![set(pointer, s(bad))],
                refuses(short),
                invalid(&[field, "invalid duration"]),
            ));
        }
    }
    c.push(case(
        Livy,
        vec![
            remove("/spec/tokenId"),
            set(
                "/spec/managed",
                json!({"expireDays": 7, "gracePeriod": "0s"}),
            ),
        ],
        Accepts,
        invalid(&["spec.managed.gracePeriod", "greater than zero"]),
    ));
    // --- maxItems out of range ---
    for v in [0, 2001, -5] {
        c.push(case(
            Fabric,
            vec![set("/spec/maxItems", json!(v))],
            refuses("maxItems"),
            invalid(&["spec.maxItems must be between 1 and 2000"]),
        ));
    }
    // --- historyLimit out of range ---
    for v in [-1, 501] {
        c.push(case(
            Fabric,
            vec![set("/spec/historyLimit", json!(v))],
            refuses("historyLimit"),
            invalid(&["spec.historyLimit must be between 0 and 500"]),
        ));
    }
    // --- principal and recipient type filters ---
    c.push(case(
        Fabric,
        vec![
            set("/spec/fabric/includeRoleAssignments", json!(true)),
            set("/spec/fabric/principalTypes", json!(["Robot"])),
        ],
        refuses("principalTypes"),
        unreadable("unknown variant `Robot`"),
    ));
    c.push(case(
        Fabric,
        vec![
            set("/spec/fabric/includeRoleAssignments", json!(true)),
            set("/spec/fabric/principalTypes", json!([])),
        ],
        refuses("too few items"),
        invalid(&["spec.fabric.principalTypes is empty"]),
    ));
    c.push(case(
        Fabric,
        vec![set("/spec/fabric/principalTypes", json!(["User"]))],
        Cel(
            "spec.fabric",
            "!has(self.principalTypes) || (has(self.includeRoleAssignments) && self.includeRoleAssignments)",
        ),
        invalid(&["spec.fabric.principalTypes", "includeRoleAssignments: true"]),
    ));
    c.push(case(
        DataRobot,
        vec![set("/spec/dataRobot/recipientTypes", json!(["User"]))],
        refuses("recipientTypes"),
        unreadable("unknown variant `User`"),
    ));
    c.push(case(
        DataRobot,
        vec![set("/spec/dataRobot/recipientTypes", json!([]))],
        refuses("too few items"),
        invalid(&["spec.dataRobot.recipientTypes is empty"]),
    ));
    // --- endpoints with userinfo, fragments, other schemes, other hosts ---
    for (base, pointer) in [
        (Ntr, "/spec/endpoint"),
        (Livy, "/spec/endpoint"),
        (Fabric, "/spec/fabric/endpoint"),
        (DataRobot, "/spec/dataRobot/endpoint"),
    ] {
        let field = pointer.rsplit('/').next().unwrap();
        for (v, schema, why) in [
            (
                "https://user:pw@127.0.0.1:1/",
                refuses(field),
                "credentials",
            ),
            (
                "https://token@app.datarobot.com/api/v2",
                refuses(field),
                "credentials",
            ),
            ("https://app.datarobot.com/api/v2#x", Accepts, "fragment"),
            ("ftp://app.datarobot.com", refuses(field), "scheme ftp"),
            ("file:///etc/passwd", refuses(field), "scheme file"),
            ("https://evil.example.com", Accepts, "not an official"),
            (
                "https://169.254.169.254/metadata",
                Accepts,
                "not an official",
            ),
            ("https://management.azure.com.", Accepts, "dot"),
        ] {
            c.push(case(base, vec![set(pointer, s(v))], schema, endpoint(why)));
        }
    }
    c
}

#[tokio::test]
async fn bad_input_is_refused_by_the_schema_and_by_the_reconciler() {
    let mock = MockServer::start_async().await;
    let any = mock
        .mock_async(|when, then| {
            when.any_request();
            then.status(500).body("{}");
        })
        .await;
    let port = mock.address().port();
    let base_url = format!("http://127.0.0.1:{port}");
    let schemas = schemas();

    // The unmodified resources pass the schema and get as far as the provider.
    for base in [Base::Ntr, Base::Livy, Base::Fabric, Base::DataRobot] {
        let doc = manifest(base, &base_url);
        assert_eq!(validate_manifest(&doc), Vec::<String>::new(), "{base:?}");
        let before = any.calls_async().await;
        let (reason, message) = preview(doc, port).await.unwrap();
        assert_eq!(reason, "ProviderError", "{base:?}: {message}");
        assert!(
            any.calls_async().await > before,
            "{base:?} reached the mock"
        );
    }

    let cases = cases();
    assert!(cases.len() > 150, "{}", cases.len());
    let mut failures = vec![];
    for (i, case) in cases.into_iter().enumerate() {
        let mut doc = manifest(case.base, &base_url);
        for e in &case.edits {
            apply(&mut doc, e, &base_url);
        }
        let label = format!("#{i} {:?} {:?}", case.base, case.edits);
        // Layer 1: the CRD schema.
        let errors = validate_manifest(&doc);
        match &case.schema {
            Schema::Refuses(what) => {
                if !errors.iter().any(|e| e.contains(what.as_str())) {
                    failures.push(format!(
                        "{label}: schema should refuse ({what}): {errors:?}"
                    ));
                }
            }
            Cel(at, rule) => {
                let (_, schema) = schemas
                    .iter()
                    .find(|(k, _)| Some(k.as_str()) == doc["kind"].as_str())
                    .unwrap();
                let rules = schema_at(schema, at)["x-kubernetes-validations"].to_string();
                if !rules.contains(*rule) {
                    failures.push(format!("{label}: no CEL rule {rule} at {at}"));
                }
            }
            Accepts => {
                if !errors.is_empty() {
                    failures.push(format!(
                        "{label}: schema accepts it, the table says: {errors:?}"
                    ));
                }
            }
        }
        // Layer 2: the reconciler, without the API server.
        let before = any.calls_async().await;
        let got = preview(doc, port).await;
        let sent = any.calls_async().await - before;
        if sent != 0 {
            failures.push(format!(
                "{label}: {sent} request(s) reached the provider: {got:?}"
            ));
        }
        let ok = match (&case.outcome, &got) {
            (Outcome::Invalid(parts), Ok((reason, message))) => {
                reason == "InvalidSpec" && parts.iter().all(|p| message.contains(p.as_str()))
            }
            (Outcome::Endpoint(part), Ok((reason, message))) => {
                reason == "EndpointNotAllowed" && message.contains(part.as_str())
            }
            (Outcome::Unreadable(part), Err(message)) => message.contains(part.as_str()),
            _ => false,
        };
        if !ok {
            failures.push(format!("{label}: expected {:?}, got {got:?}", case.outcome));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
