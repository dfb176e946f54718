#!/usr/bin/env bash
# Check a running gateway's MCP endpoint with the official MCP Inspector CLI, fetched from npm
# by npx on first use (it asks for Node >= 22.19; these commands also run on Node 20).
#
#   E2A_BASE_URL=http://127.0.0.1:8080 E2A_API_KEY=e2a_… packaging/mcp-inspector.sh
#
# Over both protocol eras of streamable HTTP (/mcp) and over stdio (`e2a mcp`) it lists the
# tools with the Inspector's schema portability checks (--strict) and calls two read-only
# tools. Exits non-zero at the first failure. Not part of CI: it needs npm and the network.
set -euo pipefail

INSPECTOR_VERSION="${INSPECTOR_VERSION:-2.12.0}"
base_url="${E2A_BASE_URL:-${E2A_URL:-http://127.0.0.1:8080}}"
base_url="${base_url%/}"
: "${E2A_API_KEY:?set E2A_API_KEY to an API key of the gateway (e2a bootstrap prints one)}"
e2a_command="${E2A_COMMAND:-e2a}"

inspect() {
    npx --yes "@modelcontextprotocol/inspector@${INSPECTOR_VERSION}" --cli --quiet "$@"
}

over_http() {
    inspect "${base_url}/mcp" --header "Authorization: Bearer ${E2A_API_KEY}" "$@"
}

over_stdio() {
    inspect -e "E2A_API_KEY=${E2A_API_KEY}" -e "E2A_BASE_URL=${base_url}" \
        ${E2A_AGENT_EMAIL:+-e "E2A_AGENT_EMAIL=${E2A_AGENT_EMAIL}"} "${e2a_command}" mcp "$@"
}

step() { printf '== %s\n' "$*" >&2; }

for era in legacy modern; do
    step "HTTP ${base_url}/mcp (${era}): tools/list --strict"
    over_http --protocol-era "${era}" --method tools/list --strict >/dev/null
    for tool in whoami list_agents; do
        step "HTTP ${base_url}/mcp (${era}): tools/call ${tool}"
        over_http --protocol-era "${era}" --method tools/call --tool-name "${tool}" \
            | grep -q '"isError": false'
    done
done

step "HTTP ${base_url}/mcp without a key is refused"
if inspect "${base_url}/mcp" --method tools/list >/dev/null 2>&1; then
    echo "error: /mcp answered without an API key" >&2
    exit 1
fi

step "stdio (${e2a_command} mcp): tools/list --strict and tools/call list_agents"
over_stdio --method tools/list --strict >/dev/null
over_stdio --method tools/call --tool-name list_agents | grep -q '"isError": false'

step "MCP Inspector ${INSPECTOR_VERSION}: all checks passed"
