//! The `better-authz` binary: parse configuration, set up logging, bind, [`better_authz::run`].

use std::net::SocketAddr;
use std::process::ExitCode;

use better_authz::config::{Args, Command, Config, PolicyCommand};
use better_authz::path::NormalPath;
use better_authz::routes::{NamedRoute, file};
use better_authz::{Listeners, run, telemetry};
use clap::Parser;

/// mimalloc instead of glibc's malloc: a check allocates about 160 blocks (protobuf strings,
/// header maps, hyper's 8 KiB read buffer per Better Auth answer), and glibc's malloc and free
/// were 17 % of the instructions per check under callgrind (BENCHMARKS.md, "CPU per check").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for invalid configuration (as clap uses for usage errors).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    // Before any TLS-capable client (Better Auth's, the OTLP exporter's) is built.
    better_authz::better_auth::install_crypto_provider();
    let args = Args::parse();
    if let Some(Command::Policy(command)) = &args.command {
        return policy_command(command);
    }
    let config = match Config::from_args(&args) {
        Ok(config) => config,
        Err(problems) => {
            eprintln!("better-authz: invalid configuration:");
            for problem in problems {
                eprintln!("  {problem}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("better-authz: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("better-authz: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `better-authz policy check|explain`: exit 0, or 2 naming every problem.
fn policy_command(command: &PolicyCommand) -> ExitCode {
    let file = match command {
        PolicyCommand::Check { file } | PolicyCommand::Explain { file, .. } => file,
    };
    let routes = match file::load(file) {
        Ok(routes) => routes,
        Err(problems) => {
            eprintln!("better-authz: {}: invalid policy:", file.display());
            for problem in problems {
                eprintln!("  {problem}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match command {
        PolicyCommand::Check { .. } => {
            println!(
                "{}: {} routes, tried in order",
                file.display(),
                routes.routes().len()
            );
            for route in routes.routes() {
                println!("  line {:<4} {route}", route.line);
            }
            println!("  (no match)  -> session");
            if let Some(login) = &routes.login {
                println!(
                    "sign-in: {} (callbacks on {})",
                    login.login_url, login.app_origin
                );
            }
        }
        PolicyCommand::Explain {
            method,
            path,
            host,
            route,
            ..
        } => {
            let normal = match NormalPath::parse(path) {
                Ok(normal) => normal,
                Err(error) => {
                    println!("denied: 400 BAD_REQUEST (the path is unusable: {error:?})");
                    return ExitCode::SUCCESS;
                }
            };
            let named = route.as_deref().map_or(NamedRoute::None, NamedRoute::Named);
            let demand = routes.demand(&normal, method, host.as_deref(), named);
            print!("{demand}");
        }
    }
    ExitCode::SUCCESS
}

async fn serve(config: Config) -> Result<(), better_authz::Error> {
    // Listen for signals before anything can be reached: a SIGTERM that arrives while the
    // listeners start must drain them, not kill the process.
    let shutdown = shutdown_signal();
    let telemetry = telemetry::init(&config.telemetry).map_err(better_authz::Error::Setup)?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %config.summary, "configuration");
    let result = async {
        let listeners = Listeners::bind(&config).await?;
        if let Ok(addrs) = listeners.addrs() {
            let show = |a: Option<SocketAddr>| a.map_or("off".to_owned(), |a| a.to_string());
            let (grpc, http) = (show(addrs.grpc), show(addrs.http));
            tracing::info!(%grpc, %http, admin = %addrs.admin, "listening");
        }
        run(config, listeners, shutdown).await
    }
    .await;
    match &result {
        Ok(()) => tracing::info!("stopped"),
        Err(error) => tracing::error!(%error, "better-authz stopped"),
    }
    telemetry.shutdown().await;
    result
}

/// SIGTERM (Kubernetes, systemd) or SIGINT (Ctrl-C). The handlers are installed when this is
/// called, not when the future is first polled.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            let next = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = next(term) => {}
                () = next(int) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
