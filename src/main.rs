//! The `mcp-orchestration` binary: a thin shell over the library's command line.

fn main() -> std::process::ExitCode {
    mcp_orchestration::cli::main()
}
