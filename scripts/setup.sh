#!/usr/bin/env bash
# Installs what Airlock needs to build and test on Debian/Ubuntu, when missing.
set -euo pipefail

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: run as root (Airlock loads eBPF programs; packages come from apt)" >&2
        exit 1
    fi
}
need_root

packages=(clang-19 llvm-19 libelf-dev zlib1g-dev pkg-config bpftool gcc make
          busybox-static sudo python3 python3-venv perl iproute2 procps findutils coreutils
          qemu-system-x86 xz-utils file tmux openssh-client postgresql python3-aiosmtpd
          chromium
          # The module-form tests run Debian's awscli as `python3 -m awscli`.
          awscli
          # cargo xtask package: dpkg-deb, dpkg-shlibdeps and strip build the
          # .deb packages, lintian checks them (docs/packaging.md).
          dpkg-dev binutils lintian
          # cargo xtask vm-test: mmdebstrap and mke2fs -d build the systemd
          # guests' Debian root (target/vm/rootfs-*.ext4, once per recipe).
          mmdebstrap e2fsprogs)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
# Debian packages npm apart from node (NodeSource's nodejs bundles it).
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "setup: build and test packages already installed"
fi

if ! command -v cargo >/dev/null 2>&1; then
    for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
        [ -x "$d/cargo" ] && export PATH="$d:$PATH"
    done
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: no Rust toolchain (cargo) found. Airlock needs stable Rust >= 1.88;" >&2
    echo "       install it with your distribution or organisation's toolchain, then rerun." >&2
    exit 1
fi
echo "setup: $(cargo --version)"

# The API tests' second client (a platform team's): Python grpcio and
# grpcio-tools from PyPI; the MCP bridge's client: the official MCP Python SDK;
# the Control Room's browser test: Playwright, which drives Debian's chromium
# (installed above; Playwright's own browser downloads are never used); the
# Kubernetes manifests' offline validation: kubernetes-validate (its bundled
# schemas, one set per Kubernetes version).
# In a venv under target/ (pinned; made once), on Debian's python3 (installed
# above): the MCP test runs it as nobody inside a governed session, so its
# interpreter must not live in a private home directory (a pyenv's).
venv=target/pyvenv
# The export tests: opentelemetry-proto (an OTLP receiver) and ocsf-json-schema
# with jsonschema (OCSF validation); the metrics tests: the official Prometheus
# client's parsers.
packages="grpcio==1.85.1 grpcio-tools==1.85.1 mcp==1.30.0 playwright==1.65.2 kubernetes-validate==1.37.0 opentelemetry-proto==1.45.2 ocsf-json-schema==1.2.0 jsonschema==4.26.0 prometheus-client==0.26.0"
if ! "$venv/bin/python" -c 'import sys, grpc, grpc_tools, mcp, playwright, kubernetes_validate, opentelemetry.proto, ocsf_json_schema, jsonschema, prometheus_client; assert sys.base_prefix == "/usr"' >/dev/null 2>&1; then
    echo "setup: making $venv with $packages (API, MCP, Control Room, Kubernetes manifest, export and metrics tests)"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    # shellcheck disable=SC2086 # one word per package
    "$venv/bin/pip" install -q --disable-pip-version-check $packages
fi
chmod -R go+rX "$venv"

# The gateway's OpenID Connect test signs in against a real provider, the
# certified oidc-provider package from npm, on Debian's node (installed
# above). Installed once under target/ from the committed lockfile; again
# only when the lockfile changes.
oidc=target/oidc-provider
oidc_lock=airlock-gateway/tests/oidc/package-lock.json
if ! cmp -s "$oidc_lock" "$oidc/package-lock.json" || [ ! -f "$oidc/node_modules/oidc-provider/package.json" ]; then
    echo "setup: installing oidc-provider (npm ci) into $oidc for the gateway's OIDC test"
    rm -rf "$oidc"
    mkdir -p "$oidc"
    cp airlock-gateway/tests/oidc/package.json "$oidc_lock" "$oidc/"
    npm ci --prefix "$oidc" --no-audit --no-fund --loglevel=error >/dev/null
fi

# The Kubernetes manifests are rendered with `kubectl kustomize` (cargo xtask
# k8s), which needs Kustomize 5 or newer. Debian bookworm's kubernetes-client
# is 1.20, whose Kustomize (v2) cannot build them, so kubectl comes from the
# Kubernetes project's own apt repository (pkgs.k8s.io, signed; its key is
# fetched over HTTPS, as kubernetes.io documents), pinned to one minor.
kubectl_minor=v1.32
kustomize_major() {
    kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9][0-9]*\)\..*/\1/p'
}
if [ "$(kustomize_major)" -ge 5 ] 2>/dev/null; then
    echo "setup: kubectl $(kubectl version --client 2>/dev/null | sed -n 's/^Client Version: //p') with Kustomize v$(kustomize_major) already installed"
else
    echo "setup: installing kubectl ${kubectl_minor} from pkgs.k8s.io (Kustomize 5 for the Kubernetes manifests; Debian's kubernetes-client is too old)"
    export DEBIAN_FRONTEND=noninteractive
    # Debian's package ships /usr/bin/kubectl too: the two cannot both be installed.
    if dpkg-query -W -f='${Status}' kubernetes-client 2>/dev/null | grep -q "install ok installed"; then
        echo "setup: removing Debian's kubernetes-client (its kubectl has Kustomize v2) for kubectl from pkgs.k8s.io"
        apt-get remove -y -qq kubernetes-client >/dev/null
    fi
    apt-get install -y -qq curl gpg ca-certificates >/dev/null
    install -d -m 0755 /etc/apt/keyrings
    if ! curl -fsSL "https://pkgs.k8s.io/core:/stable:/${kubectl_minor}/deb/Release.key" \
            | gpg --dearmor --yes -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg; then
        echo "setup: could not fetch the Kubernetes apt key from pkgs.k8s.io; install kubectl with Kustomize 5+" >&2
        echo "       yourself (https://kubernetes.io/docs/tasks/tools/), then rerun" >&2
        exit 1
    fi
    echo "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/${kubectl_minor}/deb/ /" \
        > /etc/apt/sources.list.d/kubernetes.list
    apt-get update -qq
    apt-get install -y -qq kubectl >/dev/null
    if ! [ "$(kustomize_major)" -ge 5 ] 2>/dev/null; then
        echo "setup: kubectl installed, but $(command -v kubectl) has no Kustomize 5+ (another kubectl first in PATH?)" >&2
        exit 1
    fi
    echo "setup: $(kubectl version --client | sed -n 's/^Client Version: /kubectl /p')"
fi

# The pseudo file systems the programs use (the daemon mounts them too).
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
grep -q ' tracefs ' /proc/self/mounts || mount -t tracefs tracefs /sys/kernel/tracing || true
