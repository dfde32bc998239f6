//! `kubectl-workspaceaccess`: the kubectl plugin of workspace-access-operator. On `PATH` it
//! runs as `kubectl workspaceaccess ...`. The work is done in the library's `plugin` module.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use workspace_access_operator::api::duration::Duration as KubeDuration;
use workspace_access_operator::plugin::{
    Connection, PluginError, inventory, parse_target, renew, status,
};

/// Which workspace-access tokens are about to expire, renew one now, and WorkspaceView
/// inventories for access reviews. Uses the kubeconfig as kubectl does (KUBECONFIG, else
/// ~/.kube/config, else the in-cluster configuration).
#[derive(Parser)]
#[command(
    name = "kubectl-workspaceaccess",
    bin_name = "kubectl workspaceaccess",
    version,
    about = "kubectl plugin for workspace-access-operator: which tokens expire when, renew one now, \
             and WorkspaceView inventories for access reviews",
    after_help = "Examples:\n  kubectl workspaceaccess status -A\n  kubectl workspaceaccess renew ntr/ml-notebooks -n team-a --wait\n  kubectl workspaceaccess inventory wsv/fabric-all -n platform -o csv > access-review.csv"
)]
struct Cli {
    /// Path to the kubeconfig file (default: KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List NotebookTokenRequests, LivyTokens and WorkspaceViews with their Ready condition,
    /// when their token expires and is renewed, the last sync and the Secret; soonest expiry
    /// first.
    #[command(
        after_help = "Times are relative to now: \"47m\" is ahead, \"5m ago\" past. \
        RENEWS IN says \"requested\" while a renew request waits for the operator; READY says \
        \"(old spec)\" while the condition describes an earlier spec.\n\nExamples:\n  \
        kubectl workspaceaccess status -A\n  kubectl workspaceaccess status -n team-a -o json"
    )]
    Status(StatusArgs),
    /// Ask the operator to renew now: a new token (a managed LivyToken rotates, a referenced
    /// one is read again) or a fresh WorkspaceView inventory. Sets the annotation
    /// workspaceaccess.io/renew-requested-at to the current time; the operator handles each
    /// value once and records it in status.lastRenewRequest.
    #[command(
        after_help = "KIND is ntr, livytoken or wsv (or the kind's full name).\n\n\
        Examples:\n  kubectl workspaceaccess renew ntr/ml-notebooks -n team-a\n  \
        kubectl workspaceaccess renew livytoken/spark wsv/fabric-all --wait --timeout 2m"
    )]
    Renew(RenewArgs),
    /// Show a WorkspaceView's inventory: one row per workspace or notebook, principal and role
    /// (CSV for access reviews).
    #[command(
        after_help = "CSV columns: provider, itemType, itemId, itemName, principalId, \
        principalType, principalName, role. A cell a spreadsheet would run as a formula starts \
        with '. What the inventory leaves out (truncation, unread role assignments) is said on \
        stderr.\n\nExamples:\n  kubectl workspaceaccess inventory wsv/fabric-all -n platform\n  \
        kubectl workspaceaccess inventory wsv/fabric-all -n platform -o csv > review.csv"
    )]
    Inventory(InventoryArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum StatusFormat {
    Table,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum InventoryFormat {
    Table,
    Csv,
    Json,
}

#[derive(Args)]
struct StatusArgs {
    /// Namespace to list (default: the kubeconfig context's namespace).
    #[arg(short, long, conflicts_with = "all_namespaces")]
    namespace: Option<String>,
    /// List every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = StatusFormat::Table)]
    output: StatusFormat,
}

#[derive(Args)]
struct RenewArgs {
    /// The resources, as KIND/NAME (e.g. ntr/ml-notebooks).
    #[arg(required = true, value_name = "KIND/NAME")]
    targets: Vec<String>,
    /// Namespace of the resources (default: the kubeconfig context's namespace).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Wait until the operator has handled each request.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits for each resource.
    #[arg(
        long,
        default_value = "60s",
        value_name = "DURATION",
        requires = "wait"
    )]
    timeout: KubeDuration,
}

#[derive(Args)]
struct InventoryArgs {
    /// The WorkspaceView, as wsv/NAME.
    #[arg(value_name = "wsv/NAME")]
    target: String,
    /// Namespace of the WorkspaceView (default: the kubeconfig context's namespace).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = InventoryFormat::Table)]
    output: InventoryFormat,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), PluginError> {
    // Arguments are checked before the kubeconfig is read.
    let targets = match &cli.command {
        Command::Renew(args) => args
            .targets
            .iter()
            .map(|t| parse_target(t))
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    let view = match &cli.command {
        Command::Inventory(args) => Some(inventory::view_name(&args.target)?),
        _ => None,
    };
    let conn = Connection::new(cli.kubeconfig.as_deref(), cli.context.as_deref()).await?;
    let namespace_or_default = |ns: &Option<String>| ns.clone().unwrap_or(conn.namespace.clone());
    match cli.command {
        Command::Status(args) => {
            let namespace = (!args.all_namespaces).then(|| namespace_or_default(&args.namespace));
            let found = status::collect(&conn, namespace.as_deref()).await?;
            for note in &found.notes {
                eprintln!("warning: {note}");
            }
            match args.output {
                StatusFormat::Table if found.rows.is_empty() => match &namespace {
                    Some(ns) => eprintln!("No resources found in {ns} namespace."),
                    None => eprintln!("No resources found."),
                },
                StatusFormat::Table => print!(
                    "{}",
                    status::table(&found.rows, jiff::Timestamp::now(), namespace.is_none())
                ),
                StatusFormat::Json => {
                    println!("{}", to_json(&status::StatusList { items: found.rows }))
                }
            }
        }
        Command::Renew(args) => {
            let namespace = namespace_or_default(&args.namespace);
            for (kind, name) in targets {
                let value = renew::request_value(jiff::Timestamp::now());
                renew::request(&conn, kind, &name, &namespace, &value).await?;
                println!(
                    "{}/{name} renew requested ({} = {value})",
                    kind.short,
                    workspace_access_operator::api::common::RENEW_REQUESTED_AT_ANNOTATION
                );
                if args.wait {
                    let handled = renew::wait(
                        &conn,
                        kind,
                        &name,
                        &namespace,
                        &value,
                        args.timeout.get(),
                        Duration::from_millis(500),
                    )
                    .await?;
                    println!(
                        "{}/{name} renewed: Ready={} {}: {}",
                        kind.short, handled.ready, handled.reason, handled.message
                    );
                }
            }
        }
        Command::Inventory(args) => {
            let namespace = namespace_or_default(&args.namespace);
            let name = view.unwrap_or_default();
            let view = inventory::get(&conn, &namespace, &name).await?;
            for note in inventory::notes(&view) {
                eprintln!("warning: {note}");
            }
            let rows = view
                .status
                .as_ref()
                .map(inventory::rows)
                .unwrap_or_default();
            match args.output {
                InventoryFormat::Table => print!("{}", inventory::table(&rows)),
                InventoryFormat::Csv => print!("{}", inventory::csv(&rows)),
                InventoryFormat::Json => println!("{}", to_json(&inventory::list(&view, rows))),
            }
        }
    }
    Ok(())
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
