//! `atoll`: the one binary of an Atoll cluster.

use atoll_node::http::cluster::{Remote, leave_text, status_text};
use atoll_node::{Node, ServeArgs};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "atoll",
    version,
    about = "Atoll: an analytics event store. Send JSON events, ask SQL."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node: HTTP ingest, SQL query API and dashboard.
    #[command(args_override_self = true)]
    Serve(Box<ServeArgs>),
    /// Look at a running cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Print the members, their status and what they hold.
    Status {
        #[command(flatten)]
        remote: Remote,
    },
    /// Take a node out of the ring; it stops once the new ring is in force.
    /// In a cluster holding data its partitions first get pending owners,
    /// and it keeps serving them until they are handed off.
    Leave {
        /// The node's name.
        node: String,
        /// Apply the ring without the node at once, without handoff: the
        /// rows only it held are no longer served.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Cluster(command) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            atoll_node::tls::install_crypto_provider();
            let text = runtime.block_on(async {
                match command {
                    ClusterCommand::Status { remote } => status_text(&remote).await,
                    ClusterCommand::Leave {
                        node,
                        remote,
                        force,
                    } => leave_text(&remote, &node, force).await,
                }
            })?;
            print!("{text}");
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let node = Node::start(&args).await?;
        tracing::info!(partitions = args.partitions, "started");
        if let Some(secret) = &node.generated_secret {
            eprintln!("atoll: generated cluster secret {secret} (pass it to joining nodes as --cluster-secret)");
        }
        eprintln!("atoll: node {} (flight {}, gossip {})", node.name, node.flight_addr, node.gossip_addr);
        println!("atoll listening on {}", node.http_url);
        if let Some(path) = &args.ready_file {
            write_ready_file(path, &node)?;
        }
        tokio::select! {
            _ = wait_for_signal() => tracing::info!("stopping"),
            _ = node.left() => tracing::info!("left the cluster; stopping"),
        }
        node.shutdown().await
    })
}

/// The node's addresses, written whole (a reader never sees half a file).
fn write_ready_file(path: &std::path::Path, node: &Node) -> anyhow::Result<()> {
    use anyhow::Context;
    let ready = serde_json::json!({
        "node": node.name,
        "http_addr": node.http_addr.to_string(),
        "http_url": node.http_url,
        "flight_addr": node.flight_addr.to_string(),
        "gossip_addr": node.gossip_addr.to_string(),
        "otlp_grpc_addr": node.otlp_grpc_addr.map(|a| a.to_string()),
        "pg_addr": node.pg_addr.map(|a| a.to_string()),
        "flight_sql_addr": node.flight_sql_addr.map(|a| a.to_string()),
    });
    let partial = path.with_extension("partial");
    std::fs::write(&partial, ready.to_string())
        .and_then(|()| std::fs::rename(&partial, path))
        .with_context(|| format!("cannot write --ready-file {}", path.display()))
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
