#!/usr/bin/env bash
# Quickstart: runs the agent on this machine with the local-process runtime (no Docker),
# against a fresh manifest repository that deploys the example MCP server.
#
#   ./examples/quickstart.sh            # Ctrl-C stops the agent; the server keeps running
#
# Everything lives in $QUICKSTART_DIR (default /tmp/mcp-quickstart): the bare repository the
# agent follows, a working clone to edit and push, the agent's data dir and trust policy.
# The API listens on $QUICKSTART_LISTEN (default 127.0.0.1:7070).
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$PWD
dir=${QUICKSTART_DIR:-/tmp/mcp-quickstart}
listen=${QUICKSTART_LISTEN:-127.0.0.1:7070}

echo "==> building mcp-orchestration and the example server"
cargo build --quiet --bin mcp-orchestration --example example-server
bin="$repo_root/target/debug/mcp-orchestration"
server="$repo_root/target/debug/examples/example-server"

if [ ! -d "$dir/manifest.git" ]; then
    echo "==> creating the manifest repository in $dir"
    mkdir -p "$dir"
    git init --quiet --bare --initial-branch=main "$dir/manifest.git"
    git clone --quiet "$dir/manifest.git" "$dir/manifest" 2>/dev/null
    cat >"$dir/manifest/ecosystem-manifest.yaml" <<YAML
version: "1.1"
servers:
  - id: hello
    name: Hello (the example MCP server)
    version: "1.0.0"
    transport: streamable-http
    process:
      command: $server
      args: ["--port", "{port}", "--version", "{version}"]
    health_check: { interval_seconds: 2, timeout_seconds: 1 }
YAML
    git -C "$dir/manifest" add ecosystem-manifest.yaml
    git -C "$dir/manifest" -c user.name=quickstart -c user.email=quickstart@localhost \
        commit --quiet -m "Deploy the example server"
    git -C "$dir/manifest" push --quiet origin HEAD:main
fi

# The process runtime only starts programs from directories the operator trusts.
cat >"$dir/trust-policy.yaml" <<YAML
allowed_images: [ghcr.io/liminalcommons/]
allowed_commands: [$(dirname "$server")]
YAML

# The CLI finds the agent and the API key it generated through these two variables; without
# them it would look in the default data dir, find no key, and every command that changes
# something would be refused (401).
cat <<TXT

==> starting the agent (API on http://$listen). In another terminal, first:

    export MCP_ORCHESTRATION_DATA_DIR=$(printf %q "$dir/data")
    export MCP_ORCHESTRATION_URL=http://$listen
    export PATH=$(printf %q "$(dirname "$bin")"):\$PATH

  then:

    mcp-orchestration status
    mcp-orchestration revisions

  MCP clients reach every server's tools through the gateway:
  http://${MCP_ORCHESTRATION_GATEWAY_LISTEN:-127.0.0.1:7071}/mcp
  (Claude Code: claude mcp add --transport http fleet http://127.0.0.1:7071/mcp)

  To roll out a new version, edit and push the manifest:

    cd $(printf %q "$dir/manifest")
    sed -i 's/version: "1.0.0"/version: "1.1.0"/' ecosystem-manifest.yaml
    git commit -qam "hello 1.1.0" && git push -q origin HEAD:main

  The agent sees the push at once (it watches the local repository), starts 1.1.0 beside
  1.0.0, waits for it to be healthy, then stops 1.0.0:

    mcp-orchestration status hello

TXT
exec "$bin" agent \
    --repo "$dir/manifest.git" \
    --runtime process \
    --listen "$listen" \
    --data-dir "$dir/data" \
    --trust-policy "$dir/trust-policy.yaml"
