#!/usr/bin/env bash
# Installs the MCP client programs tests/it/client_programs.rs runs (Claude Code, Codex,
# Gemini CLI), pinned, each in its own npm prefix: PREFIX/<name>/node_modules/.bin/<name>.
# Idempotent: a program whose installed version is the pin and which runs is left alone.
#   .ci/install-mcp-clients.sh PREFIX
set -euo pipefail
prefix=${1:?usage: install-mcp-clients.sh PREFIX}

# Gemini CLI 0.61 needs Node 20 or newer (Claude Code's package asks for 22, but runs its
# own native binary; Codex's script needs 16).
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
    echo "node $(node --version) is too old for Gemini CLI 0.61 (it needs Node 20 or newer)" >&2
    exit 1
fi

declare -A pins=(
    [claude]="@anthropic-ai/claude-code@2.1.332"
    [codex]="@openai/codex@0.171.0"
    [gemini]="@google/gemini-cli@0.61.0"
)
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
for name in claude codex gemini; do
    spec=${pins[$name]}
    package=${spec%@*}
    version=${spec##*@}
    dir="$prefix/$name"
    have=$(node -p "require('$dir/node_modules/$package/package.json').version" 2>/dev/null || true)
    # Claude Code's postinstall replaces the bin/claude.exe stub with the native binary: a
    # copy whose --version fails was installed without it.
    if [ "$have" = "$version" ] && "$dir/node_modules/.bin/$name" --version >/dev/null 2>&1; then
        continue
    fi
    echo "--- installing $spec"
    rm -rf "$dir"
    mkdir -p "$dir"
    # Gemini CLI's install scripts only build its optional node-pty and keytar, which
    # `gemini mcp list` does not use.
    extra=()
    [ "$name" = gemini ] && extra=(--ignore-scripts)
    npm install --prefix "$dir" --no-save --loglevel=error "${extra[@]}" "$spec"
    "$dir/node_modules/.bin/$name" --version
done
