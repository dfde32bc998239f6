//! Provider answers of any shape, to every parser the clients use: Azure Resource Manager's
//! notebook token, Microsoft Entra ID's token and error, EMR Serverless Spark's envelope and its
//! Get / List / Create data, Fabric's pages and errors, DataRobot's pages, bulk answer and
//! errors.
//!
//! Besides not panicking: a provider may echo the credentials a request carried, so `@@` in the
//! fuzzed body and headers stands for the credential of that call; no error's message or
//! request id may then contain any 8 characters in a row of it (not even a clipped part).

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use workspace_access_operator::fuzzing::{self, EmrOperation};

const BEARER: &str = "fz-bearer-0a1b2c3d4e5f6a7b";
const CLIENT_SECRET: &str = "fz-client-secret-9f8e7d6c5b4a";
const AK_SECRET: &str = "fz-access-key-secret-2468ace0";
const STS_TOKEN: &str = "fz-sts-security-token-13579bdf";
const API_TOKEN: &str = "fz-datarobot-api-token-7c6b5a49";

#[derive(Arbitrary, Debug)]
enum Parser {
    Arm,
    Entra,
    EmrGet,
    EmrList,
    EmrCreate,
    EmrDelete,
    FabricWorkspaces,
    FabricRoleAssignments,
    DataRobotNotebooks,
    DataRobotRoles,
    DataRobotBulk,
}

#[derive(Arbitrary, Debug)]
struct Input {
    parser: Parser,
    status: u16,
    /// Header values (request ids, Retry-After, x-acs-retry-after, ...), by name index.
    headers: Vec<(u8, String)>,
    body: String,
    /// Which credential `@@` stands for in an EMR answer (the AccessKey secret or the token).
    emr_token: bool,
}

const HEADER_NAMES: &[&str] = &[
    "retry-after",
    "x-acs-retry-after",
    "x-ms-request-id",
    "x-ms-correlation-request-id",
    "requestid",
    "x-request-id",
    "x-datarobot-request-id",
    "content-type",
];

/// Every run of 8 characters of `secret` that appears in `text`.
fn leaked(text: &str, secret: &str) -> Option<String> {
    let chars: Vec<char> = secret.chars().collect();
    chars
        .windows(8)
        .map(|w| w.iter().collect::<String>())
        .find(|w| text.contains(w.as_str()))
}

fuzz_target!(|input: Input| {
    let secret = match input.parser {
        Parser::Arm | Parser::FabricWorkspaces | Parser::FabricRoleAssignments => BEARER,
        Parser::Entra => CLIENT_SECRET,
        Parser::EmrGet | Parser::EmrList | Parser::EmrCreate | Parser::EmrDelete => {
            if input.emr_token {
                STS_TOKEN
            } else {
                AK_SECRET
            }
        }
        Parser::DataRobotNotebooks | Parser::DataRobotRoles | Parser::DataRobotBulk => API_TOKEN,
    };
    let echo = |s: &str| s.replace("@@", secret);
    let body = echo(&input.body);
    let headers: Vec<(&str, String)> = input
        .headers
        .iter()
        .map(|(i, v)| (HEADER_NAMES[usize::from(*i) % HEADER_NAMES.len()], echo(v)))
        .collect();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Statuses an HTTP client can see.
    let status = 100 + input.status % 500;
    let r = fuzzing::response(status, &headers, body.as_bytes());
    let result = match input.parser {
        Parser::Arm => fuzzing::arm_token(&r, BEARER),
        Parser::Entra => fuzzing::entra_token(&r, CLIENT_SECRET),
        Parser::EmrGet => fuzzing::emr(EmrOperation::Get, &r, AK_SECRET, STS_TOKEN),
        Parser::EmrList => fuzzing::emr(EmrOperation::List, &r, AK_SECRET, STS_TOKEN),
        Parser::EmrCreate => fuzzing::emr(EmrOperation::Create, &r, AK_SECRET, STS_TOKEN),
        Parser::EmrDelete => fuzzing::emr(EmrOperation::Delete, &r, AK_SECRET, STS_TOKEN),
        Parser::FabricWorkspaces => fuzzing::fabric_workspaces(&r, BEARER).map(drop),
        Parser::FabricRoleAssignments => fuzzing::fabric_role_assignments(&r, BEARER).map(drop),
        Parser::DataRobotNotebooks => fuzzing::datarobot_notebooks(&r, API_TOKEN).map(drop),
        Parser::DataRobotRoles => fuzzing::datarobot_roles(&r, API_TOKEN).map(drop),
        Parser::DataRobotBulk => fuzzing::datarobot_bulk(&r, API_TOKEN).map(drop),
    };
    // A fragment the fuzzer wrote itself (not an echo of the whole credential) is the
    // provider's own text: only fragments of whole echoes count.
    let residual = format!("{body}{headers:?}").replace(secret, "\u{0}");
    if let Err(e) = result
        && leaked(&residual, secret).is_none()
    {
        // What a condition shows: the message and the request id.
        let shown = e.to_string();
        if let Some(w) = leaked(&shown, secret) {
            panic!(
                "{:?}: the credential leaks ({w:?}) into: {shown}",
                input.parser
            );
        }
        assert!(!e.message.is_empty());
    }
});
