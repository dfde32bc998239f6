//! Tests of the generated CRDs: structural schemas (a real API server rejects anything else),
//! a description on every field (for `kubectl explain`), validation patterns, the example
//! manifests, and that `crds/` matches the code.

use super::*;
use serde_json::Value;

fn schemas() -> Vec<(String, Value)> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.spec.names.kind.clone();
            let schema = serde_json::to_value(
                crd.spec.versions[0]
                    .schema
                    .as_ref()
                    .unwrap()
                    .open_api_v3_schema
                    .as_ref()
                    .unwrap(),
            )
            .unwrap();
            (name, schema)
        })
        .collect()
}

/// Walks a schema and reports violations of the structural-schema rules
/// (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema).
fn structural_violations(path: &str, s: &Value, out: &mut Vec<String>) {
    let obj = s.as_object().expect("schema node is an object");
    for forbidden in [
        "$ref",
        "$schema",
        "definitions",
        "$defs",
        "dependencies",
        "patternProperties",
        "additionalItems",
        "const",
    ] {
        if obj.contains_key(forbidden) {
            out.push(format!("{path}: {forbidden} is not allowed"));
        }
    }
    let special = obj.contains_key("x-kubernetes-int-or-string")
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !obj.contains_key("type") && !special {
        out.push(format!("{path}: no type"));
    }
    for logic in ["anyOf", "oneOf", "allOf", "not"] {
        if let Some(v) = obj.get(logic) {
            // Inside logical junctors only value validations are allowed, no types or
            // descriptions.
            let subs: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for sub in subs {
                for k in [
                    "type",
                    "description",
                    "default",
                    "nullable",
                    "additionalProperties",
                ] {
                    if sub.get(k).is_some() {
                        out.push(format!("{path}: {logic} branch sets {k}"));
                    }
                }
            }
        }
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        out.push(format!("{path}: both properties and additionalProperties"));
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (k, v) in props {
            structural_violations(&format!("{path}.{k}"), v, out);
        }
    }
    if let Some(items) = obj.get("items") {
        structural_violations(&format!("{path}[]"), items, out);
    }
    if let Some(ap @ Value::Object(_)) = obj.get("additionalProperties") {
        structural_violations(&format!("{path}{{}}"), ap, out);
    }
}

#[test]
fn schemas_are_structural() {
    for (kind, schema) in schemas() {
        let mut v = vec![];
        structural_violations(&kind, &schema, &mut v);
        assert!(
            v.is_empty(),
            "{kind} schema is not structural:\n{}",
            v.join("\n")
        );
    }
}

#[test]
fn the_structural_check_catches_violations() {
    let mut v = vec![];
    let bad = serde_json::json!({
        "type": "object",
        "properties": {
            "a": {"description": "no type"},
            "b": {"type": "string", "anyOf": [{"type": "string"}]},
            "c": {"$ref": "#/x", "type": "object"}
        }
    });
    structural_violations("t", &bad, &mut v);
    assert_eq!(v.len(), 3, "{v:?}");
}

fn missing_descriptions(path: &str, s: &Value, out: &mut Vec<String>) {
    if let Some(Value::Object(props)) = s.get("properties") {
        for (k, v) in props {
            let p = format!("{path}.{k}");
            if v.get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                out.push(p.clone());
            }
            missing_descriptions(&p, v, out);
        }
    }
    if let Some(items) = s.get("items") {
        missing_descriptions(&format!("{path}[]"), items, out);
    }
}

#[test]
fn every_field_is_described_for_kubectl_explain() {
    for (kind, schema) in schemas() {
        let mut missing = vec![];
        for part in ["spec", "status"] {
            missing_descriptions(
                &format!("{kind}.{part}"),
                &schema["properties"][part],
                &mut missing,
            );
        }
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
    }
}

#[test]
fn names_categories_columns_and_subresources() {
    let crds = crds();
    let want = [
        (
            "NotebookTokenRequest",
            "ntr",
            vec![
                "Workspace",
                "Secret",
                "Ready",
                "Reason",
                "Expires",
                "Age",
                "Message",
                "Last Sync",
                "Next Sync",
            ],
        ),
        (
            "LivyToken",
            "livytoken",
            vec![
                "Livy Compute",
                "Token",
                "Secret",
                "Ready",
                "Reason",
                "Expires",
                "Age",
                "Message",
                "Last Sync",
                "Next Sync",
            ],
        ),
        (
            "WorkspaceView",
            "wsv",
            vec![
                "Provider",
                "Count",
                "Ready",
                "Reason",
                "Last Sync",
                "Age",
                "Message",
                "Next Sync",
            ],
        ),
    ];
    assert_eq!(crds.len(), 4);
    let cc = &crds[3];
    assert_eq!(cc.spec.names.kind, "ClusterCredential");
    assert_eq!(cc.spec.scope, "Cluster");
    assert_eq!(
        cc.spec.names.short_names.as_deref(),
        Some(&["ccred".to_string()][..])
    );
    assert_eq!(
        cc.spec.names.categories.as_deref(),
        Some(&["workspaceaccess".to_string()][..])
    );
    let v = &cc.spec.versions[0];
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    let names: Vec<&str> = v
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["Provider", "Ready", "Reason", "Used By", "Age", "Message"]
    );
    let message = &v.additional_printer_columns.as_ref().unwrap()[5];
    assert_eq!(message.priority, Some(1), "the message only with -o wide");
    for (crd, (kind, short, columns)) in crds.iter().zip(want) {
        assert_eq!(crd.spec.group, "workspaceaccess.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[short.to_string()][..])
        );
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["workspaceaccess".to_string()][..])
        );
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(
            v.subresources.as_ref().unwrap().status.is_some(),
            "{kind} status subresource"
        );
        let names: Vec<&str> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, columns, "{kind} printer columns");
        // The Ready condition's reason in the default output; its message and the sync times
        // only with -o wide (priority 1).
        for c in v.additional_printer_columns.as_ref().unwrap() {
            let (path, priority) = match c.name.as_str() {
                "Ready" => (r#".status.conditions[?(@.type=="Ready")].status"#, None),
                "Reason" => (r#".status.conditions[?(@.type=="Ready")].reason"#, None),
                "Message" => (r#".status.conditions[?(@.type=="Ready")].message"#, Some(1)),
                "Next Sync" => (".status.nextSyncTime", Some(1)),
                "Last Sync" if kind == "WorkspaceView" => (".status.lastSyncTime", None),
                "Last Sync" => (".status.lastSyncTime", Some(1)),
                _ => continue,
            };
            assert_eq!(c.json_path, path, "{kind} {}", c.name);
            assert_eq!(c.priority, priority, "{kind} {} priority", c.name);
        }
    }
}

// ---- a small validator for the subset of OpenAPI the CRDs use, to check manifests ----

fn validate(path: &str, schema: &Value, v: &Value, errors: &mut Vec<String>) {
    if v.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            errors.push(format!("{path}: null not allowed"));
        }
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let ok = match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    };
    if !ok {
        errors.push(format!("{path}: expected {ty}, got {v}"));
        return;
    }
    if let Some(Value::Array(choices)) = schema.get("enum")
        && !choices.contains(v)
    {
        errors.push(format!("{path}: {v} is not one of {choices:?}"));
    }
    if let Some(s) = v.as_str() {
        let n = s.chars().count() as u64;
        if let Some(p) = schema.get("pattern").and_then(Value::as_str)
            && !pattern_matches(p, s)
        {
            errors.push(format!("{path}: {s:?} does not match {p}"));
        }
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
        {
            errors.push(format!("{path}: too short"));
        }
        if schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| n > m)
        {
            errors.push(format!("{path}: too long"));
        }
    }
    if let Some(n) = v.as_f64() {
        if schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            errors.push(format!("{path}: {n} below minimum"));
        }
        if schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            errors.push(format!("{path}: {n} above maximum"));
        }
    }
    if let Some(a) = v.as_array() {
        if schema
            .get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| (a.len() as u64) < m)
        {
            errors.push(format!("{path}: too few items"));
        }
        if schema
            .get("maxItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| (a.len() as u64) > m)
        {
            errors.push(format!("{path}: too many items"));
        }
        if let Some(items) = schema.get("items") {
            for (i, item) in a.iter().enumerate() {
                validate(&format!("{path}[{i}]"), items, item, errors);
            }
        }
    }
    if let Some(o) = v.as_object() {
        if let Some(Value::Array(req)) = schema.get("required") {
            for r in req {
                if !o.contains_key(r.as_str().unwrap()) {
                    errors.push(format!("{path}: missing required {r}"));
                }
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, val) in o {
            match (
                props.and_then(|p| p.get(k)),
                schema.get("additionalProperties"),
            ) {
                (Some(sub), _) => validate(&format!("{path}.{k}"), sub, val, errors),
                (None, Some(ap @ Value::Object(_))) => {
                    validate(&format!("{path}.{k}"), ap, val, errors)
                }
                // The API server would drop an unknown field silently; in our own examples
                // that is a typo.
                (None, _) if props.is_some() => errors.push(format!("{path}: unknown field {k}")),
                _ => {}
            }
        }
    }
}

/// `re` matches `s` (compiled regexes are kept: the bad-input table validates hundreds of
/// manifests).
fn pattern_matches(re: &str, s: &str) -> bool {
    thread_local! {
        static CACHE: std::cell::RefCell<std::collections::HashMap<String, regex::Regex>> =
            Default::default();
    }
    CACHE.with(|c| {
        c.borrow_mut()
            .entry(re.to_owned())
            .or_insert_with(|| regex::Regex::new(re).unwrap())
            .is_match(s)
    })
}

/// Validates a manifest against the CRD of its kind (the spec part; metadata is the API
/// server's business).
pub(crate) fn validate_manifest(doc: &Value) -> Vec<String> {
    static SCHEMAS: std::sync::OnceLock<Vec<(String, Value)>> = std::sync::OnceLock::new();
    let kind = doc["kind"].as_str().unwrap_or_default();
    let Some((_, schema)) = SCHEMAS.get_or_init(schemas).iter().find(|(k, _)| k == kind) else {
        return vec![format!("unknown kind {kind}")];
    };
    let mut errors = vec![];
    validate(
        kind,
        &schema["properties"]["spec"],
        &doc["spec"],
        &mut errors,
    );
    errors
}

const NTR: &str = r#"{"kind": "NotebookTokenRequest", "spec": {
    "subscriptionId": "00000000-1111-2222-3333-444444444444",
    "resourceGroup": "workspace-1234", "workspaceName": "testworkspace",
    "azure": {"tenantId": "00000000-0000-0000-0000-000000000000",
              "clientId": "11111111-1111-1111-1111-111111111111",
              "clientSecretRef": {"name": "azure-sp", "key": "clientSecret"}}}}"#;

fn with(base: &str, pointer: &str, value: Value) -> Value {
    let mut v: Value = serde_json::from_str(base).unwrap();
    *v.pointer_mut(pointer).unwrap() = value;
    v
}

#[test]
fn schema_patterns_refuse_bad_names_and_path_tricks() {
    assert_eq!(
        validate_manifest(&serde_json::from_str(NTR).unwrap()),
        Vec::<String>::new()
    );
    for (pointer, value) in [
        ("/spec/workspaceName", "ab"),
        ("/spec/workspaceName", "../evil"),
        ("/spec/workspaceName", "ws?api-version=1"),
        ("/spec/workspaceName", "ws/../../x"),
        ("/spec/resourceGroup", ".."),
        ("/spec/resourceGroup", "rg/../other"),
        ("/spec/resourceGroup", "rg."),
        ("/spec/subscriptionId", "not-a-guid"),
        ("/spec/azure/tenantId", "common/../x"),
        ("/spec/apiVersion", "latest"),
        ("/spec/renewBefore", "1d"),
        ("/spec/endpoint", "https://user@host"),
        ("/spec/azure/cloud", "AzureGermany"),
    ] {
        let doc = if pointer == "/spec/renewBefore"
            || pointer == "/spec/apiVersion"
            || pointer == "/spec/endpoint"
            || pointer == "/spec/azure/cloud"
        {
            let mut d: Value = serde_json::from_str(NTR).unwrap();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            d.pointer_mut(parent).unwrap()[key] = Value::from(value);
            d
        } else {
            with(NTR, pointer, Value::from(value))
        };
        let errors = validate_manifest(&doc);
        assert!(!errors.is_empty(), "{pointer}={value:?} was accepted");
    }
}

#[test]
fn api_md_examples_validate() {
    for doc in [
        NTR.to_owned(),
        r#"{"kind": "LivyToken", "spec": {"regionId": "cn-hangzhou", "workspaceId": "w-8adde60aa809701f",
            "livyComputeId": "lc-6mkvn01zrg8rqhhv", "tokenId": "lctk-xxxxxxxx",
            "alibaba": {"accessKeyRef": {"name": "ali-ak", "accessKeyIdKey": "accessKeyId", "accessKeySecretKey": "accessKeySecret", "securityTokenKey": ""}},
            "secretName": "spark-livy-token", "refreshInterval": "5m", "renewBefore": "1h"}}"#.to_owned(),
        r#"{"kind": "LivyToken", "spec": {"regionId": "cn-hangzhou", "workspaceId": "w-8adde60aa809701f",
            "livyComputeId": "lc-6mkvn01zrg8rqhhv", "managed": {"name": "", "expireDays": 7, "gracePeriod": "10m"},
            "alibaba": {"rrsa": true}}}"#.to_owned(),
        r#"{"kind": "WorkspaceView", "spec": {"refreshInterval": "15m", "maxItems": 500,
            "fabric": {"roles": ["Admin", "Member"], "includeRoleAssignments": false,
                       "endpoint": "https://api.fabric.microsoft.com",
                       "azure": {"tenantId": "contoso.onmicrosoft.com", "clientId": "11111111-1111-1111-1111-111111111111",
                                 "clientSecretRef": {"name": "fabric-sp", "key": "clientSecret"}}}}}"#.to_owned(),
        r#"{"kind": "WorkspaceView", "spec": {"dataRobot": {"endpoint": "https://app.datarobot.com/api/v2",
            "selector": {"useCaseId": "65f0aa", "owners": ["u1"], "tags": ["prod"], "query": "churn"},
            "apiTokenRef": {"name": "datarobot", "key": "apiToken"}, "authScheme": "Token"}}}"#.to_owned(),
    ] {
        let v: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(validate_manifest(&v), Vec::<String>::new(), "{doc}");
    }
    let bad = r#"{"kind": "WorkspaceView", "spec": {"maxItems": 0, "fabric": {"roles": ["Owner"],
        "azure": {"tenantId": "t.example.com", "clientId": "11111111-1111-1111-1111-111111111111", "workloadIdentity": true}}}}"#;
    let errors = validate_manifest(&serde_json::from_str(bad).unwrap());
    assert_eq!(errors.len(), 2, "{errors:?}");
}

/// The one-of rules are written as `a ? !b : b`: Kubernetes 1.24's CEL cost estimator (CEL
/// validation was alpha then) refuses `has(a) != has(b)` as too expensive, while this form of
/// the same exclusive-or passes on every version with CEL rules.
#[test]
fn one_of_rules_are_in_the_schema() {
    let all = serde_json::to_string(&crds()).unwrap();
    for rule in [
        "has(self.tokenId) ? !has(self.managed) : has(self.managed)",
        "has(self.fabric) ? !has(self.dataRobot) : has(self.dataRobot)",
        "has(self.notebookIds) ? !has(self.selector) : has(self.selector)",
        "has(self.clientSecretRef) ? !(has(self.workloadIdentity) && self.workloadIdentity) : (has(self.workloadIdentity) && self.workloadIdentity)",
        "has(self.accessKeyRef) ? !(has(self.rrsa) && self.rrsa) : (has(self.rrsa) && self.rrsa)",
        "has(self.azure) ? !has(self.credentialRef) : has(self.credentialRef)",
        "has(self.alibaba) ? !has(self.credentialRef) : has(self.credentialRef)",
        "has(self.apiTokenRef) ? !has(self.credentialRef) : has(self.credentialRef)",
        "has(self.azure) ? (!has(self.alibaba) && !has(self.dataRobot)) : (has(self.alibaba) ? !has(self.dataRobot) : has(self.dataRobot))",
    ] {
        assert!(all.contains(rule), "missing CEL rule {rule}");
    }
}

#[test]
fn example_manifests_in_deploy_validate() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            if doc["apiVersion"] != "workspaceaccess.io/v1alpha1" {
                continue;
            }
            seen += 1;
            assert_eq!(
                validate_manifest(&doc),
                Vec::<String>::new(),
                "{}",
                path.display()
            );
            // And the typed API accepts it, with its one-ofs consistent.
            match doc["kind"].as_str().unwrap() {
                "NotebookTokenRequest" => {
                    let o: NotebookTokenRequest = serde_json::from_value(doc).unwrap();
                    if let CredentialChoice::Inline(a) = o.spec.credentials().unwrap() {
                        a.source().unwrap();
                    }
                }
                "LivyToken" => {
                    let o: LivyToken = serde_json::from_value(doc).unwrap();
                    o.spec.mode().unwrap();
                    if let CredentialChoice::Inline(a) = o.spec.credentials().unwrap() {
                        a.source().unwrap();
                    }
                }
                "WorkspaceView" => {
                    let o: WorkspaceView = serde_json::from_value(doc).unwrap();
                    match o.spec.source().unwrap() {
                        workspace_view::InventorySource::Fabric(f) => {
                            if let CredentialChoice::Inline(a) = f.credentials().unwrap() {
                                a.source().unwrap();
                            }
                        }
                        workspace_view::InventorySource::DataRobot(d) => {
                            d.credentials().unwrap();
                        }
                    }
                }
                "ClusterCredential" => {
                    let o: ClusterCredential = serde_json::from_value(doc).unwrap();
                    o.spec.credentials().unwrap();
                    assert_eq!(o.spec.allowed_namespaces.problem(), None);
                }
                k => panic!("unexpected kind {k}"),
            }
        }
    }
    assert!(seen >= 3, "expected example manifests in {dir}");
}

#[test]
fn crds_directory_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/workspaceaccess.io.yaml");
    let on_disk = std::fs::read_to_string(path).expect("crds/workspaceaccess.io.yaml exists");
    assert!(
        on_disk == crds_yaml().unwrap(),
        "crds/ is out of date: run `cargo run -- crd > crds/workspaceaccess.io.yaml`"
    );
}

/// `kubectl apply -f crds/` applies every .yaml, .yml and .json file in the folder: each must
/// be a CRD (the kustomization is named `Kustomization`, which kubectl skips and kustomize
/// finds).
#[test]
fn kubectl_apply_f_crds_finds_only_crds() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");
    let mut manifests = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if !["yaml", "yml", "json"].contains(&ext) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        for doc in docs.iter().filter(|d| !d.is_null()) {
            assert_eq!(
                doc["kind"],
                "CustomResourceDefinition",
                "{}",
                path.display()
            );
            manifests += 1;
        }
    }
    assert!(manifests >= 3);
    assert!(std::path::Path::new(dir).join("Kustomization").exists());
}
