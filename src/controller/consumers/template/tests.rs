use super::*;
use crate::api::common::SecretKeys;

const KEYS: &[&str] = &[
    "accessToken",
    "refreshToken",
    "tokenType",
    "expiresAt",
    "hostName",
    "publicDns",
    "notebookResourceId",
    "scope",
];
const TOKEN: &str = "eyJ0eXAi.secret-notebook-token.sig";

fn base() -> BTreeMap<String, SecretString> {
    [
        ("accessToken", TOKEN),
        ("tokenType", "Bearer"),
        ("expiresAt", "2026-12-05T13:00:00Z"),
        ("hostName", "nb-host"),
        ("publicDns", "nb.westus2.notebooks.azure.net"),
        ("notebookResourceId", "abc123"),
        ("scope", "aznb_identity"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), SecretString::new(v)))
    .collect()
}

fn template(data: &[(&str, &str)], keys: Option<SecretKeys>) -> SecretTemplate {
    SecretTemplate {
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        keys,
        ..Default::default()
    }
}

const RES: Resource<'static> = Resource {
    name: "ml",
    namespace: "team-a",
};

fn render_one(source: &str) -> Result<String, String> {
    let t = template(&[("out", source)], None);
    render(Some(&t), KEYS, &base(), RES).map(|d| d["out"].expose().to_owned())
}

#[test]
fn every_variable_renders() {
    for (var, want) in [
        ("accessToken", TOKEN),
        ("tokenType", "Bearer"),
        ("expiresAt", "2026-12-05T13:00:00Z"),
        ("hostName", "nb-host"),
        ("publicDns", "nb.westus2.notebooks.azure.net"),
        ("notebookResourceId", "abc123"),
        ("scope", "aznb_identity"),
        ("name", "ml"),
        ("namespace", "team-a"),
    ] {
        assert_eq!(
            render_one(&format!("{{{{ {var} }}}}")).unwrap(),
            want,
            "{var}"
        );
    }
    // An optional key the provider did not return is an empty string, not an error.
    assert_eq!(render_one("[{{ refreshToken }}]").unwrap(), "[]");
}

#[test]
fn a_netrc_and_a_json_config_render_as_written() {
    let out =
        render_one("machine {{ publicDns }} login token password {{ accessToken }}\n").unwrap();
    assert_eq!(
        out,
        format!("machine nb.westus2.notebooks.azure.net login token password {TOKEN}\n")
    );
    let json =
        render_one(r#"{"host": {{ publicDns | tojson }}, "token": {{ accessToken | tojson }}}"#)
            .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["token"], TOKEN);
    assert_eq!(parsed["host"], "nb.westus2.notebooks.azure.net");
}

#[test]
fn nothing_is_html_escaped_and_tojson_escapes_for_json() {
    let mut b = base();
    b.insert("scope".into(), SecretString::new(r#"a<b>&"c""#));
    let t = template(
        &[("raw", "{{ scope }}"), ("json", "{{ scope | tojson }}")],
        None,
    );
    let d = render(Some(&t), KEYS, &b, RES).unwrap();
    assert_eq!(d["raw"].expose(), r#"a<b>&"c""#);
    let back: String = serde_json::from_str(d["json"].expose()).unwrap();
    assert_eq!(back, r#"a<b>&"c""#);
    let url = render_one("https://x/?t={{ 'a b&c' | urlencode }}").unwrap();
    assert_eq!(url, "https://x/?t=a%20b%26c");
}

#[test]
fn keys_all_keeps_the_kinds_keys_and_templated_only_drops_them() {
    let all = template(&[("netrc", "{{ accessToken }}")], None);
    let d = render(Some(&all), KEYS, &base(), RES).unwrap();
    assert!(d.contains_key("accessToken") && d.contains_key("netrc"));
    assert_eq!(d.len(), base().len() + 1);
    let only = template(
        &[("netrc", "{{ accessToken }}")],
        Some(SecretKeys::TemplatedOnly),
    );
    let d = render(Some(&only), KEYS, &base(), RES).unwrap();
    assert_eq!(d.keys().collect::<Vec<_>>(), vec!["netrc"]);
    // No template: the kind's keys as they are.
    assert_eq!(
        render(None, KEYS, &base(), RES).unwrap().len(),
        base().len()
    );
}

#[test]
fn an_undefined_variable_is_refused_before_any_rendering_naming_key_and_variable() {
    let t = template(&[("netrc", "password {{ acessToken }}")], None);
    let err = check(&t, KEYS).unwrap_err();
    assert!(
        err.contains(r#"spec.secretTemplate.data["netrc"]"#),
        "{err}"
    );
    assert!(err.contains("undefined variable acessToken"), "{err}");
    assert!(err.contains("accessToken"), "lists the variables: {err}");
    // The same at render time (strict undefined).
    assert!(render(Some(&t), KEYS, &base(), RES).is_err());
    // Attribute access on a string is undefined too.
    let t = template(&[("x", "{{ accessToken.nope }}")], None);
    assert!(render(Some(&t), KEYS, &base(), RES).is_err());
}

#[test]
fn a_template_that_does_not_parse_names_the_problem_and_line() {
    let t = template(&[("cfg", "line one\n{{ accessToken ")], None);
    let err = check(&t, KEYS).unwrap_err();
    assert!(
        err.starts_with(r#"spec.secretTemplate.data["cfg"]: syntax error"#),
        "{err}"
    );
    assert!(err.contains("line 2"), "{err}");
    let t = template(&[("cfg", "{% for x in %}")], None);
    assert!(check(&t, KEYS).unwrap_err().contains("syntax error"));
}

#[test]
fn keys_are_checked_names_sizes_and_clashes() {
    let bad = template(&[("bad/key", "x")], None);
    assert!(
        check(&bad, KEYS)
            .unwrap_err()
            .contains("is not a Secret key")
    );
    let clash = template(&[("accessToken", "{{ accessToken }}x")], None);
    let err = check(&clash, KEYS).unwrap_err();
    assert!(err.contains("one of the kind's own keys"), "{err}");
    // With TemplatedOnly a key may take a kind key's name.
    let ok = template(
        &[("accessToken", "{{ accessToken }}")],
        Some(SecretKeys::TemplatedOnly),
    );
    assert!(check(&ok, KEYS).is_ok());
    let empty = SecretTemplate {
        keys: Some(SecretKeys::TemplatedOnly),
        ..Default::default()
    };
    assert!(check(&empty, KEYS).unwrap_err().contains("would be empty"));
    let long = "x".repeat(MAX_TEMPLATE_LENGTH + 1);
    assert!(
        check(&template(&[("k", &long)], None), KEYS)
            .unwrap_err()
            .contains("longer than")
    );
    let many: Vec<(String, String)> = (0..=MAX_TEMPLATE_KEYS)
        .map(|i| (format!("k{i}"), "x".to_string()))
        .collect();
    let many = SecretTemplate {
        data: Some(many.into_iter().collect()),
        ..Default::default()
    };
    assert!(check(&many, KEYS).unwrap_err().contains("at most 32"));
}

#[test]
fn rendering_is_bounded_by_fuel_and_output_size() {
    let loops = render_one(
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    )
    .unwrap_err();
    assert!(loops.contains("fuel") || loops.contains("range"), "{loops}");
    let big = render_one("{{ 'x' * 70000 }}").unwrap_err();
    assert!(big.contains("longer than 65536"), "{big}");
}

#[test]
fn no_error_shows_a_value() {
    for source in [
        "{{ accessToken + 1 }}",
        "{{ accessToken | int + undefinedthing }}",
        "{{ accessToken[1000] }}",
        "{{ accessToken | nosuchfilter }}",
        "{{ range(accessToken) }}",
        "{{ accessToken is nosuchtest }}",
        "{{ (accessToken ~ accessToken) | int }}",
        "{% set x = accessToken %}{{ x.y }}",
        "{{ accessToken() }}",
    ] {
        let t = template(&[("k", source)], None);
        let out = render(Some(&t), KEYS, &base(), RES);
        if let Err(e) = out {
            assert!(!e.contains("secret-notebook-token"), "{source}: {e}");
            assert!(
                e.starts_with(r#"spec.secretTemplate.data["k"]"#),
                "{source}: {e}"
            );
        }
    }
    // An error whose message would quote a value has it redacted.
    let e = minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        format!("cannot convert {TOKEN} to int"),
    );
    let text = describe(&e, &[TOKEN]);
    assert!(!text.contains(TOKEN), "{text}");
    assert!(text.contains("cannot convert [redacted] to int"), "{text}");
}

#[test]
fn the_templates_of_the_examples_check() {
    use crate::api::{LivyToken, NotebookTokenRequest};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");
    let mut checked = 0;
    for file in [
        "notebooktokenrequest-consumers.yaml",
        "livytoken-consumers.yaml",
    ] {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        for doc in docs {
            let (template, keys): (Option<SecretTemplate>, &[&str]) = match doc["kind"].as_str() {
                Some("NotebookTokenRequest") => {
                    let o: NotebookTokenRequest = serde_json::from_value(doc).unwrap();
                    (o.spec.secret_template, KEYS)
                }
                Some("LivyToken") => {
                    let o: LivyToken = serde_json::from_value(doc).unwrap();
                    (o.spec.secret_template, &["token", "tokenId", "expiresAt"])
                }
                _ => continue,
            };
            let template = template.unwrap();
            check(&template, keys).unwrap();
            checked += 1;
        }
    }
    assert_eq!(checked, 2);
}
