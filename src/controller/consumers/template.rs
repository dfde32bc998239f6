//! `secretTemplate.data`: extra Secret keys rendered from Jinja templates with MiniJinja.
//!
//! Pure functions. The variables are the kind's Secret keys (an optional key the provider did
//! not return is an empty string) and `name` / `namespace` of the resource. Undefined
//! variables are errors (strict), nothing is HTML-escaped, and rendering is bounded by fuel
//! and by the size of each rendered value. Errors name the key and the problem, never a value:
//! MiniJinja's messages describe the template, and any value that still shows up in one is
//! replaced by `[redacted]`.

use crate::api::common::{MAX_TEMPLATE_KEYS, MAX_TEMPLATE_LENGTH, SecretKeys, SecretTemplate};
use crate::redact::SecretString;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use std::collections::BTreeMap;

/// Longest rendered value of a templated key, in bytes.
pub const MAX_RENDERED: usize = 64 * 1024;
/// Fuel of one template's rendering (MiniJinja counts about one unit per instruction), so
/// that a loop can't keep the operator busy.
pub const FUEL: u64 = 100_000;

/// The variables every template has besides the kind's keys.
pub const RESOURCE_VARIABLES: [&str; 2] = ["name", "namespace"];

/// The resource a Secret is rendered for.
#[derive(Clone, Copy, Debug)]
pub struct Resource<'a> {
    /// The resource's name.
    pub name: &'a str,
    /// The resource's namespace.
    pub namespace: &'a str,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(FUEL));
    // A config file's final newline is part of it. (Building the default syntax with one
    // whitespace option changed can't fail; should it, the default syntax stays.)
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env
}

/// Checks `secretTemplate.data` before any provider call: key names, sizes, syntax, and that
/// every variable a template uses exists. `kind_keys` are the kind's Secret keys (the
/// variables besides name and namespace).
pub fn check(template: &SecretTemplate, kind_keys: &[&str]) -> Result<(), String> {
    let count = template.templates().count();
    if count > MAX_TEMPLATE_KEYS {
        return Err(format!(
            "spec.secretTemplate.data has {count} keys, at most {MAX_TEMPLATE_KEYS} are allowed"
        ));
    }
    if template.keys() == SecretKeys::TemplatedOnly && count == 0 {
        return Err(
            "spec.secretTemplate.keys is TemplatedOnly but spec.secretTemplate.data has no keys: \
             the Secret would be empty"
                .into(),
        );
    }
    let env = environment();
    for (key, source) in template.templates() {
        let at = |problem: String| format!("spec.secretTemplate.data[{key:?}]: {problem}");
        if !crate::api::names::is_secret_key(key) {
            return Err(format!(
                "spec.secretTemplate.data: {:?} is not a Secret key (letters, digits, '-', '_' \
                 and '.', at most 253 characters)",
                crate::providers::error::clip(key, 100)
            ));
        }
        if template.keys() == SecretKeys::All && kind_keys.contains(&key.as_str()) {
            return Err(at(format!(
                "{key} is one of the kind's own keys; choose another name, or set \
                 spec.secretTemplate.keys: TemplatedOnly"
            )));
        }
        if source.chars().count() > MAX_TEMPLATE_LENGTH {
            return Err(at(format!(
                "the template is longer than {MAX_TEMPLATE_LENGTH} characters"
            )));
        }
        let parsed = env
            .template_from_str(source)
            .map_err(|e| at(describe(&e, &[])))?;
        let mut unknown: Vec<String> = parsed
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| {
                !kind_keys.contains(&v.as_str()) && !RESOURCE_VARIABLES.contains(&v.as_str())
            })
            .collect();
        unknown.sort();
        if !unknown.is_empty() {
            let mut known: Vec<&str> = kind_keys.to_vec();
            known.extend(RESOURCE_VARIABLES);
            return Err(at(format!(
                "undefined variable{} {}; the variables are {}",
                if unknown.len() == 1 { "" } else { "s" },
                unknown.join(", "),
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// The Secret's data: the kind's keys (unless `keys: TemplatedOnly`) and the rendered
/// templates. `kind_keys` are all of the kind's keys (absent ones render as empty strings).
pub fn render(
    template: Option<&SecretTemplate>,
    kind_keys: &[&str],
    base: &BTreeMap<String, SecretString>,
    resource: Resource<'_>,
) -> Result<BTreeMap<String, SecretString>, String> {
    let Some(template) = template.filter(|t| t.templates().next().is_some()) else {
        return Ok(base.clone());
    };
    check(template, kind_keys)?;
    let mut vars: BTreeMap<&str, Value> = kind_keys
        .iter()
        .map(|k| {
            let v = base
                .get(*k)
                .map(|s| s.expose().to_owned())
                .unwrap_or_default();
            (*k, Value::from(v))
        })
        .collect();
    vars.insert("name", Value::from(resource.name));
    vars.insert("namespace", Value::from(resource.namespace));
    let context = Value::from(vars);
    let secrets: Vec<&str> = base
        .values()
        .map(SecretString::expose)
        .filter(|v| v.len() >= 4)
        .collect();
    let mut out = match template.keys() {
        SecretKeys::All => base.clone(),
        SecretKeys::TemplatedOnly => BTreeMap::new(),
    };
    let env = environment();
    for (key, source) in template.templates() {
        let at = |problem: String| format!("spec.secretTemplate.data[{key:?}]: {problem}");
        let rendered = env
            .template_from_str(source)
            .and_then(|t| t.render(&context))
            .map_err(|e| at(describe(&e, &secrets)))?;
        if rendered.len() > MAX_RENDERED {
            return Err(at(format!(
                "the rendered value is longer than {MAX_RENDERED} bytes"
            )));
        }
        out.insert(key.clone(), SecretString::new(rendered));
    }
    Ok(out)
}

/// A MiniJinja error as one line: its kind, its detail and the line, with any of `secrets`
/// that appears in it replaced by `[redacted]`.
fn describe(e: &minijinja::Error, secrets: &[&str]) -> String {
    let mut text = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        text.push_str(&format!(" (line {line})"));
    }
    let mut text = text.replace(['\n', '\r'], " ");
    for s in secrets {
        if text.contains(s) {
            text = text.replace(s, "[redacted]");
        }
    }
    crate::providers::error::clip(&text, 300)
}

#[cfg(test)]
mod tests;
