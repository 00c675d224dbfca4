#!/usr/bin/env bash
# The Kubernetes manifests (deploy/kubernetes): renders every kustomization
# with `kubectl kustomize` and checks the objects each one must hold — the
# CSIDriver, RBAC, the controller Deployment with csi-provisioner, the node
# DaemonSet with node-driver-registrar and Bidirectional propagation, the
# StorageClasses' parameters, the static PersistentVolume, the claims' access
# modes, and the vLLM Deployment mounting its claim read-only at /models.
# Needs no cluster: only kubectl's built-in kustomize (any version from
# kubectl 1.14 on, Debian 12's kubernetes-client included).
#
# Usage: deploy_test.sh [SOURCE_DIR]   (default: the checkout holding this script)
# KUBECTL=/path/to/kubectl picks another kubectl.
# shellcheck disable=SC2016,SC2013  # awk programs and $(NODE_NAME) are literal; loops read single words
set -euo pipefail
root=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
deploy=$root/deploy/kubernetes
kubectl=${KUBECTL:-kubectl}
if ! command -v "$kubectl" >/dev/null; then
  echo "FAIL: kubectl not found: install kubectl (Debian: kubernetes-client)"
  exit 1
fi
[ -d "$deploy" ] || { echo "FAIL: no $deploy"; exit 1; }

work=$(mktemp -d /tmp/nacre-deploy-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
passed=0
failed=0
started=$SECONDS

ok() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; }
check() {  # check NAME COMMAND... : the command must succeed
  local name=$1; shift
  if "$@" >"$work/out" 2>&1; then ok "$name"; else fail "$name"; sed 's/^/     /' "$work/out" | head -5; fi
}

# flatten: kustomize's output (block style, two-space indents, lists at their
# key's indent) as one line per scalar, "Kind/name path=value", e.g.
#   DaemonSet/nacre-node spec.template.spec.containers[0].args[1]=--mode
# Quotes around values are dropped; block scalars (|, >) are skipped. mawk.
flatten_awk='
function flush(   i) {
  if (kind != "") for (i = 1; i <= nout; i++) print kind "/" name " " out[i]
  nout = 0; kind = ""; name = ""; sp = 0; skip = -1; split("", cnt)
}
function path(   i, p) {
  p = ""
  for (i = 1; i <= sp; i++) {
    if (isitem[i]) p = p key[i]
    else p = (p == "" ? key[i] : p "." key[i])
  }
  return p
}
function unquote(v) {
  if (v ~ /^".*"$/ || v ~ /^\x27.*\x27$/) v = substr(v, 2, length(v) - 2)
  return v
}
function emit(p, v) { out[++nout] = p "=" unquote(v) }
function keyline(d, s,   c, k, v) {  # "key: value" or "key:" at indent d
  c = index(s, ": ")
  if (c > 0) { k = substr(s, 1, c - 1); v = substr(s, c + 2) }
  else { k = substr(s, 1, length(s) - 1); v = "" }
  sp++; ind[sp] = d; key[sp] = k; isitem[sp] = 0
  if (k == "kind" && sp == 1) kind = v
  if (k == "name" && sp == 2 && key[1] == "metadata") name = v
  if (v == "|" || v == "|-" || v == ">" || v == ">-") { skip = d; return }
  if (v != "") emit(path(), v)
  else if (c > 0) emit(path(), "")
}
BEGIN { nout = 0; sp = 0; skip = -1 }
/^---/ { flush(); next }
/^[ \t]*(#.*)?$/ { next }
{
  line = $0
  d = match(line, /[^ ]/) - 1
  if (skip >= 0 && d > skip) next
  skip = -1
  s = substr(line, d + 1)
  if (substr(s, 1, 2) == "- " || s == "-") {
    while (sp > 0 && (ind[sp] > d || (ind[sp] == d && isitem[sp]))) sp--
    p = path()
    n = cnt[p] + 0; cnt[p] = n + 1
    sp++; ind[sp] = d; key[sp] = "[" n "]"; isitem[sp] = 1
    rest = substr(s, 3)
    if (rest ~ /^[^ "\x27][^:]*:( |$)/ && rest !~ /^[^:]*:\/\//) keyline(d + 2, rest)
    else if (rest != "") emit(path(), rest)
    next
  }
  while (sp > 0 && ind[sp] >= d) sp--
  keyline(d, s)
}
END { flush() }'

render() {  # render NAME DIR: kubectl kustomize DIR into $work/NAME.yaml and NAME.flat
  local name=$1 dir=$2
  if "$kubectl" kustomize "$dir" >"$work/$name.yaml" 2>"$work/$name.err"; then
    awk "$flatten_awk" "$work/$name.yaml" >"$work/$name.flat"
    ok "$name renders ($(grep -c '^kind:' "$work/$name.yaml") objects)"
  else
    fail "$name renders"; sed 's/^/     /' "$work/$name.err" | head -10
    : >"$work/$name.yaml"; : >"$work/$name.flat"
  fi
}

# Queries on a flattened rendering. OBJ is "Kind/name".
val() {  # val NAME OBJ PATH: the value (first match), fails when absent
  awk -v o="$2" -v p="$3" '$1 == o { i = index($0, "="); if (substr($0, length(o) + 2, i - length(o) - 2) == p) { print substr($0, i + 1); f = 1; exit } } END { exit !f }' "$work/$1.flat"
}
vals() {  # vals NAME OBJ PATH_PREFIX: values of PATH_PREFIX[i] (a list of scalars)
  awk -v o="$2" -v p="$3" '$1 == o { i = index($0, "="); k = substr($0, length(o) + 2, i - length(o) - 2)
    if (index(k, p "[") == 1 && substr(k, length(p) + 1) ~ /^\[[0-9]+\]$/) print substr($0, i + 1) }' "$work/$1.flat"
}
keys() {  # keys NAME OBJ PATH: the keys of the map of scalars at PATH (keys may hold dots)
  awk -v o="$2" -v p="$3." '$1 == o { i = index($0, "="); k = substr($0, length(o) + 2, i - length(o) - 2)
    if (index(k, p) == 1) print substr(k, length(p) + 1) }' "$work/$1.flat"
}
has_obj() { grep -q "^$2 " "$work/$1.flat"; }
is() {  # is NAME OBJ PATH EXPECTED
  local v
  v=$(val "$1" "$2" "$3") || { echo "$2: no $3"; return 1; }
  [ "$v" = "$4" ] || { echo "$2 $3 is '$v', not '$4'"; return 1; }
}
contains() {  # contains NAME OBJ LIST_PATH ITEM...: every ITEM is in the list
  local name=$1 obj=$2 list=$3 item; shift 3
  for item in "$@"; do
    vals "$name" "$obj" "$list" | grep -Fxq -- "$item" || { echo "$obj $list lacks '$item'"; return 1; }
  done
}
index_of() {  # index_of NAME OBJ LIST_PATH FIELD VALUE: i such that LIST_PATH[i].FIELD=VALUE
  awk -v o="$2" -v p="$3" -v f="$4" -v want="$5" '$1 == o { i = index($0, "="); k = substr($0, length(o) + 2, i - length(o) - 2)
    if (index(k, p "[") == 1 && substr($0, i + 1) == want) { r = substr(k, length(p) + 2); j = index(r, "]")
      if (substr(r, j + 1) == "." f) { print substr(r, 1, j - 1); found = 1; exit } } } END { exit !found }' "$work/$1.flat"
}
container() {  # container NAME OBJ CONTAINER: the path of that container of a pod template
  local i
  i=$(index_of "$1" "$2" spec.template.spec.containers name "$3") || { echo "$2 has no container $3" >&2; return 1; }
  echo "spec.template.spec.containers[$i]"
}
args_have() {  # args_have NAME OBJ CONTAINER ARG...: the args hold this sequence, in order
  local name=$1 obj=$2 c; c=$(container "$1" "$2" "$3") || return 1; shift 3
  vals "$name" "$obj" "$c.args" | tr '\n' '\001' >"$work/args"
  local want; want=$(printf '%s\001' "$@")
  grep -Fq -- "$want" "$work/args" || { echo "$obj $c args lack: $*"; return 1; }
}
mount_of() {  # mount_of NAME OBJ CONTAINER MOUNTPATH: the path of that volumeMount
  local c i; c=$(container "$1" "$2" "$3") || return 1
  i=$(index_of "$1" "$2" "$c.volumeMounts" mountPath "$4") || { echo "$2/$3 mounts nothing at $4" >&2; return 1; }
  echo "$c.volumeMounts[$i]"
}
volume_of() {  # volume_of NAME OBJ VOLUME_NAME: the path of that pod volume
  local i; i=$(index_of "$1" "$2" spec.template.spec.volumes name "$3") || { echo "$2 has no volume $3" >&2; return 1; }
  echo "spec.template.spec.volumes[$i]"
}
host_path_is() {  # host_path_is NAME OBJ CONTAINER MOUNTPATH HOSTPATH TYPE [PROPAGATION]
  local m v
  m=$(mount_of "$1" "$2" "$3" "$4") || return 1
  v=$(volume_of "$1" "$2" "$(val "$1" "$2" "$m.name")") || return 1
  is "$1" "$2" "$v.hostPath.path" "$5" && is "$1" "$2" "$v.hostPath.type" "$6" || return 1
  [ $# -lt 7 ] || is "$1" "$2" "$m.mountPropagation" "$7"
}
rule_verbs_have() {  # rule_verbs_have NAME OBJ API_GROUP RESOURCE VERB...: one rule grants them all
  local name=$1 obj=$2 group=$3 res=$4 i; shift 4
  for i in $(awk -v o="$obj" '$1 == o && $2 ~ /^rules\[[0-9]+\]\.resources\[/ { s = $2; sub(/^rules\[/, "", s); sub(/\].*/, "", s); print s }' "$work/$name.flat" | sort -u); do
    vals "$name" "$obj" "rules[$i].resources" | grep -Fxq "$res" || continue
    vals "$name" "$obj" "rules[$i].apiGroups" | grep -Fxq -- "$group" || continue
    contains "$name" "$obj" "rules[$i].verbs" "$@" >/dev/null && return 0
  done
  echo "$obj: no rule grants $* on $res in group '$group'"; return 1
}
port_number() {  # port_number NAME OBJ CONTAINER PORT: PORT, or the number of the named port
  local c i
  case $4 in (*[!0-9]*) ;; (*) echo "$4"; return 0 ;; esac
  c=$(container "$1" "$2" "$3") || return 1
  i=$(index_of "$1" "$2" "$c.ports" name "$4") || { echo "$2/$3 has no port named $4" >&2; return 1; }
  val "$1" "$2" "$c.ports[$i].containerPort"
}

# --- every kustomization renders --------------------------------------------
echo "kubectl: $(command -v "$kubectl"), $("$kubectl" version --client 2>/dev/null | head -1)"
while read -r k; do
  dir=$(dirname "$k")
  render "$(echo "${dir#"$deploy"/}" | tr / -)" "$dir"
done < <(find "$deploy" -name kustomization.yaml | sort)
for n in base overlays-dynamic overlays-linked overlays-static examples-vllm credentials; do
  check "$n is among the renderings" test -s "$work/$n.flat"
done

# --- base: what every overlay carries ----------------------------------------
C=CSIDriver/nacre.csi.dev
D=Deployment/nacre-controller
N=DaemonSet/nacre-node
CR=ClusterRole/nacre-csi-provisioner
R=Role/nacre-csi-provisioner

t_base_objects() {  # t_base_objects RENDERING
  local o
  for o in Namespace/nacre-system $C ServiceAccount/nacre-controller ServiceAccount/nacre-node \
    $CR ClusterRoleBinding/nacre-csi-provisioner $R RoleBinding/nacre-csi-provisioner $D $N; do
    has_obj "$1" "$o" || { echo "missing $o"; return 1; }
  done
}
for r in base overlays-dynamic overlays-linked overlays-static examples-vllm; do
  check "$r: Namespace, CSIDriver, service accounts, RBAC, controller, node plugin" t_base_objects "$r"
done
t_no_secret() { ! grep '^Secret/' "$work/base.flat"; }
check "base holds no Secret (re-applying it never overwrites real keys)" t_no_secret

t_csidriver() {
  is base $C apiVersion storage.k8s.io/v1 && is base $C spec.attachRequired false && is base $C spec.podInfoOnMount true
}
check "CSIDriver nacre.csi.dev: storage.k8s.io/v1, attachRequired false, podInfoOnMount true" t_csidriver
t_csidriver_more() {
  is base $C spec.requiresRepublish true && is base $C spec.fsGroupPolicy None \
    && [ "$(vals base $C spec.volumeLifecycleModes)" = Persistent ]
}
check "CSIDriver nacre.csi.dev: requiresRepublish, Persistent only, fsGroupPolicy None" t_csidriver_more
for o in $D $N ServiceAccount/nacre-controller ServiceAccount/nacre-node $R RoleBinding/nacre-csi-provisioner; do
  check "$o is in nacre-system" is base "$o" metadata.namespace nacre-system
done

check "provisioner RBAC: persistentvolumes get/list/watch/create/delete/patch" \
  rule_verbs_have base $CR "" persistentvolumes get list watch create delete patch
check "provisioner RBAC: persistentvolumeclaims get/list/watch/update" \
  rule_verbs_have base $CR "" persistentvolumeclaims get list watch update
check "provisioner RBAC: storageclasses get/list/watch" rule_verbs_have base $CR storage.k8s.io storageclasses get list watch
check "provisioner RBAC: events list/watch/create/update/patch" rule_verbs_have base $CR "" events list watch create update patch
check "provisioner RBAC: csinodes get/list/watch" rule_verbs_have base $CR storage.k8s.io csinodes get list watch
check "provisioner RBAC: nodes get/list/watch" rule_verbs_have base $CR "" nodes get list watch
check "provisioner RBAC: leader-election leases in nacre-system" \
  rule_verbs_have base $R coordination.k8s.io leases get watch list delete update create
check "provisioner RBAC: provisioner secrets in nacre-system" rule_verbs_have base $R "" secrets get
t_binding() {  # t_binding KIND
  local b=$1/nacre-csi-provisioner
  is base "$b" 'subjects[0].kind' ServiceAccount && is base "$b" 'subjects[0].name' nacre-controller \
    && is base "$b" 'subjects[0].namespace' nacre-system && is base "$b" roleRef.name nacre-csi-provisioner \
    && is base "$b" roleRef.kind "${1%Binding}"
}
check "ClusterRoleBinding binds the controller's service account" t_binding ClusterRoleBinding
check "RoleBinding binds the controller's service account" t_binding RoleBinding

# The controller Deployment.
t_controller_args() {
  args_have base $D nacre csi && args_have base $D nacre --endpoint unix:///csi/csi.sock \
    && args_have base $D nacre --mode controller && args_have base $D nacre --node-id '$(NODE_NAME)' \
    && args_have base $D nacre --state-dir /var/lib/nacre/csi
}
check "controller: nacre csi --mode controller on unix:///csi/csi.sock" t_controller_args
t_controller_image() {
  is base $D "$(container base $D nacre).image" nacre:0.1.0 && is base $D spec.template.spec.serviceAccountName nacre-controller
}
check "controller: image nacre:0.1.0, service account nacre-controller" t_controller_image
t_provisioner() {
  local c; c=$(container base $D csi-provisioner) || return 1
  val base $D "$c.image" | grep -q '^registry\.k8s\.io/sig-storage/csi-provisioner:v5\.' \
    && args_have base $D csi-provisioner --csi-address=/csi/csi.sock && args_have base $D csi-provisioner --extra-create-metadata \
    && args_have base $D csi-provisioner --leader-election && vals base $D "$c.args" | grep -q '^--timeout='
}
check "controller: csi-provisioner v5 with --extra-create-metadata, --leader-election, --timeout" t_provisioner
t_liveness() {  # t_liveness OBJ: the livenessprobe sidecar serves the nacre container's liveness probe
  local c n p; c=$(container base "$1" liveness-probe) && n=$(container base "$1" nacre) || return 1
  val base "$1" "$c.image" | grep -q '^registry\.k8s\.io/sig-storage/livenessprobe:v' \
    || { echo "$1 liveness-probe image: $(val base "$1" "$c.image")"; return 1; }
  args_have base "$1" liveness-probe --csi-address=/csi/csi.sock || return 1
  is base "$1" "$n.livenessProbe.httpGet.path" /healthz || return 1
  p=$(port_number base "$1" nacre "$(val base "$1" "$n.livenessProbe.httpGet.port")") || return 1
  vals base "$1" "$c.args" | grep -qE "^--http-endpoint=[0-9.]*:$p\$" \
    || { echo "$1: the liveness probe asks port $p, the livenessprobe sidecar serves: $(vals base "$1" "$c.args" | grep http)"; return 1; }
}
check "controller: livenessprobe sidecar serves the nacre container's liveness probe" t_liveness $D
t_shared_socket() {
  local v; v=$(val base $D "$(mount_of base $D nacre /csi).name") || return 1
  is base $D "$(mount_of base $D csi-provisioner /csi).name" "$v" && is base $D "$(mount_of base $D liveness-probe /csi).name" "$v" \
    && val base $D "$(volume_of base $D "$v").emptyDir"
}
check "controller: the three containers share the socket's emptyDir at /csi" t_shared_socket

# The node DaemonSet.
t_node_args() {
  args_have base $N nacre csi && args_have base $N nacre --mode node && args_have base $N nacre --node-id '$(NODE_NAME)' \
    && args_have base $N nacre --endpoint unix:///csi/csi.sock \
    && args_have base $N nacre --state-dir /var/lib/nacre/csi \
    && args_have base $N nacre --cache-dir /var/cache/nacre
}
check "node: nacre csi --mode node, state under the plugin dir, cache /var/cache/nacre" t_node_args
t_node_container() {
  local c i; c=$(container base $N nacre) || return 1
  is base $N "$c.securityContext.privileged" true && is base $N "$c.image" nacre:0.1.0 \
    && i=$(index_of base $N "$c.env" name NODE_NAME) && is base $N "$c.env[$i].valueFrom.fieldRef.fieldPath" spec.nodeName \
    && is base $N spec.template.spec.serviceAccountName nacre-node
}
check "node: nacre container privileged, image nacre:0.1.0, NODE_NAME from spec.nodeName" t_node_container
check "node: /var/lib/kubelet mounted with Bidirectional propagation" \
  host_path_is base $N nacre /var/lib/kubelet /var/lib/kubelet Directory Bidirectional
check "node: plugin dir /var/lib/kubelet/plugins/nacre.csi.dev (DirectoryOrCreate) at /csi" \
  host_path_is base $N nacre /csi /var/lib/kubelet/plugins/nacre.csi.dev DirectoryOrCreate
check "node: /dev from the host (for /dev/fuse)" host_path_is base $N nacre /dev /dev Directory
check "node: node cache hostPath /var/cache/nacre (DirectoryOrCreate)" \
  host_path_is base $N nacre /var/cache/nacre /var/cache/nacre DirectoryOrCreate
t_registrar() {
  local c; c=$(container base $N node-driver-registrar) || return 1
  val base $N "$c.image" | grep -q '^registry\.k8s\.io/sig-storage/csi-node-driver-registrar:v' \
    && args_have base $N node-driver-registrar --csi-address=/csi/csi.sock \
    && args_have base $N node-driver-registrar --kubelet-registration-path=/var/lib/kubelet/plugins/nacre.csi.dev/csi.sock \
    && host_path_is base $N node-driver-registrar /registration /var/lib/kubelet/plugins_registry Directory \
    && host_path_is base $N node-driver-registrar /csi /var/lib/kubelet/plugins/nacre.csi.dev DirectoryOrCreate
}
check "node: node-driver-registrar registers the socket's host path" t_registrar
check "node: livenessprobe sidecar serves the nacre container's liveness probe" t_liveness $N
t_node_rollout() {
  is base $N spec.updateStrategy.type OnDelete && is base $N 'spec.template.spec.tolerations[0].operator' Exists
}
check "node: updateStrategy OnDelete, on every node (tolerates all taints)" t_node_rollout
t_mounter() {
  local c sock; c=$(container base $N mounter) || return 1
  args_have base $N nacre --mounter-socket /run/nacre/mounter.sock || return 1
  args_have base $N mounter csi --mode mounter --mounter-socket /run/nacre/mounter.sock || return 1
  is base $N "$c.image" "$(val base $N "$(container base $N nacre).image")" || return 1
  is base $N "$c.securityContext.privileged" true || return 1
  sock=$(val base $N "$(mount_of base $N nacre /run/nacre).name") || return 1
  is base $N "$(mount_of base $N mounter /run/nacre).name" "$sock" || return 1
  val base $N "$(volume_of base $N "$sock").emptyDir" || return 1
  host_path_is base $N mounter /var/lib/kubelet /var/lib/kubelet Directory Bidirectional || return 1
  host_path_is base $N mounter /dev /dev Directory || return 1
  host_path_is base $N mounter /var/cache/nacre /var/cache/nacre DirectoryOrCreate
}
check "node: the mounter container (csi --mode mounter) on the plugin's --mounter-socket, same image and views" t_mounter
t_mounter_never_killed() {
  local c; c=$(container base $N mounter) || return 1
  ! val base $N "$c.resources.limits.memory" >/dev/null || { echo "the mounter has a memory limit"; return 1; }
  ! val base $N "$c.livenessProbe.httpGet.path" >/dev/null || { echo "the mounter has a liveness probe"; return 1; }
}
check "node: no memory limit and no liveness probe on the mounter (it holds the FUSE processes)" t_mounter_never_killed
check "node: host PID namespace (recorded mount pids stay meaningful)" is base $N spec.template.spec.hostPID true

# Every workload: images carry explicit tags, every volumeMount names a volume.
t_images_tagged() {  # t_images_tagged RENDERING
  local img n=0
  while read -r img; do
    n=$((n + 1))
    case ${img##*/} in (*:latest | *:) echo "$img"; return 1 ;; (*:*) ;; (*) echo "untagged: $img"; return 1 ;; esac
  done < <(sed -n 's/^[^ ]* .*\.image=//p' "$work/$1.flat")
  [ "$n" -gt 0 ]
}
t_mounts_have_volumes() {  # t_mounts_have_volumes RENDERING
  awk '$2 ~ /^spec\.template\.spec\.volumes\[[0-9]+\]\.name=/ { split($2, a, "="); v[$1 " " a[2]] = 1 }
    $2 ~ /^spec\.template\.spec\.(initContainers|containers)\[[0-9]+\]\.volumeMounts\[[0-9]+\]\.name=/ { split($2, a, "="); m[$1 " " a[2]] = 1 }
    END { bad = 0; for (k in m) if (!(k in v)) { print "no volume for the mount " k; bad = 1 } exit bad }' "$work/$1.flat"
}
for r in base examples-vllm; do
  check "$r: every image has an explicit tag (not latest)" t_images_tagged "$r"
  check "$r: every volumeMount names a volume of its pod" t_mounts_have_volumes "$r"
done

# --- parameters, attributes and mount options the driver accepts ------------
# The parameter names are those of docs/KUBERNETES.md's table (first column;
# csi.storage.k8s.io/* belong to kubelet and csi-provisioner), so a manifest
# can only use documented names; the allow-list is the node plugin's.
known_params=$(awk '/^### Parameters/ { on = 1; next } /^###/ { on = 0 }
  on && /^\| `/ { split($0, cell, "|"); n = split(cell[2], w, "`"); for (i = 2; i <= n; i += 2) print w[i] }' \
  "$root/docs/KUBERNETES.md" | tr '\n' ' ')
t_params_documented() {
  local k
  for k in bucketName basePrefix pathPattern prefix s3ImportPath s3ExportPath autoImportPolicy autoExportPolicy \
    deleteData endpointUrl region addressingStyle cacheSize metadataTtl uid gid fileMode dirMode caBundle preload \
    preloadWaitSeconds; do
    case " $known_params " in (*" $k "*) ;; (*) echo "docs/KUBERNETES.md's parameter table lacks $k"; return 1 ;; esac
  done
}
check "docs/KUBERNETES.md's parameter table names every parameter" t_params_documented
t_doc_paths() {  # every deploy/kubernetes/... path the docs name exists
  local p bad=0
  for p in $(grep -oh 'deploy/kubernetes/[A-Za-z0-9_./-]*' "$root/docs/KUBERNETES.md" "$root/README.md" | sed 's:[.]*$::' | sort -u); do
    [ -e "$root/$p" ] || { echo "no $p"; bad=1; }
  done
  return $bad
}
check "every deploy/kubernetes path in docs/KUBERNETES.md and README.md exists" t_doc_paths
allowed_option() {
  local o=${1//_/-}
  case $o in
    (ro | read-only | contain-symlinks) return 0 ;;
    (uid=* | gid=* | file-mode=* | dir-mode=* | metadata-ttl=* | cache-size=* | import-policy=* | export-policy=*) return 0 ;;
    (hydrate-min-size=* | fetch-threads=* | fuse-threads=* | part-size=* | addressing-style=* | region=*) return 0 ;;
    (endpoint-url=* | max-attempts=* | connect-timeout=* | stall-timeout=* | log-level=*) return 0 ;;
  esac
  return 1
}
t_volume_settings() {  # t_volume_settings RENDERING: known parameter names, allowed mount options
  local o k bad=0
  for o in $(awk '$1 ~ /^(StorageClass|PersistentVolume)\// { print $1 }' "$work/$1.flat" | sort -u); do
    case $o in
      (StorageClass/*) keys "$1" "$o" parameters >"$work/keys"; vals "$1" "$o" mountOptions >"$work/options" ;;
      (*) keys "$1" "$o" spec.csi.volumeAttributes >"$work/keys"; vals "$1" "$o" spec.mountOptions >"$work/options" ;;
    esac
    while read -r k; do
      case $k in (csi.storage.k8s.io/*) continue ;; esac
      case " $known_params " in (*" $k "*) ;; (*) echo "$o: unknown parameter $k"; bad=1 ;; esac
    done <"$work/keys"
    while read -r k; do
      allowed_option "$k" || { echo "$o: mount option $k is not on the allow-list"; bad=1; }
    done <"$work/options"
  done
  return $bad
}
for r in overlays-dynamic overlays-linked overlays-static examples-vllm; do
  check "$r: StorageClass parameters and PV attributes are known names, mount options allowed" t_volume_settings "$r"
done
t_secrets() {  # t_secrets RENDERING STORAGECLASS
  local k
  for k in provisioner node-stage; do
    is "$1" "$2" "parameters.csi.storage.k8s.io/$k-secret-name" nacre-s3-credentials || return 1
    is "$1" "$2" "parameters.csi.storage.k8s.io/$k-secret-namespace" nacre-system || return 1
  done
}
t_claim() {  # t_claim RENDERING PVC ACCESS_MODE STORAGE_CLASS [STORAGE]
  is "$1" "$2" metadata.namespace default || return 1
  [ "$(vals "$1" "$2" spec.accessModes)" = "$3" ] || { echo "$2 access modes: $(vals "$1" "$2" spec.accessModes | tr '\n' ' ')"; return 1; }
  is "$1" "$2" spec.storageClassName "$4" || return 1
  [ $# -lt 5 ] || is "$1" "$2" spec.resources.requests.storage "$5"
}

# The dynamic overlay.
S=StorageClass/nacre-fresh
t_dynamic_class() {
  is overlays-dynamic $S provisioner nacre.csi.dev && [ -n "$(val overlays-dynamic $S parameters.bucketName)" ] \
    && is overlays-dynamic $S parameters.basePrefix volumes/ && val overlays-dynamic $S parameters.autoExportPolicy \
    && is overlays-dynamic $S parameters.deleteData false && is overlays-dynamic $S reclaimPolicy Delete \
    && is overlays-dynamic $S volumeBindingMode Immediate
}
check "dynamic: StorageClass nacre-fresh: bucket, basePrefix volumes/, deleteData \"false\", Delete, Immediate" t_dynamic_class
check "dynamic: provisioner and node-stage secrets are nacre-system/nacre-s3-credentials" t_secrets overlays-dynamic $S
check "dynamic: claim scratch, ReadWriteMany, 100Gi of nacre-fresh" \
  t_claim overlays-dynamic PersistentVolumeClaim/scratch ReadWriteMany nacre-fresh 100Gi

# The linked overlay.
S=StorageClass/nacre-models
t_linked_class() {
  is overlays-linked $S provisioner nacre.csi.dev && is overlays-linked $S parameters.s3ImportPath s3://models/mistral-7b-instruct \
    && is overlays-linked $S parameters.autoImportPolicy NEW_CHANGED_DELETED && is overlays-linked $S parameters.autoExportPolicy NONE \
    && is overlays-linked $S parameters.metadataTtl 60 && is overlays-linked $S parameters.preload '*.safetensors,*.json' \
    && is overlays-linked $S parameters.preloadWaitSeconds 600
}
check "linked: StorageClass nacre-models: s3ImportPath, NEW_CHANGED_DELETED, NONE, preload, wait 600 s" t_linked_class
check "linked: provisioner and node-stage secrets are nacre-system/nacre-s3-credentials" t_secrets overlays-linked $S
check "linked: claim mistral-weights, ReadOnlyMany of nacre-models" \
  t_claim overlays-linked PersistentVolumeClaim/mistral-weights ReadOnlyMany nacre-models

# The static overlay.
P=PersistentVolume/mistral-7b-static
t_static_pv() {
  local a=spec.csi.volumeAttributes
  is overlays-static $P spec.csi.driver nacre.csi.dev && is overlays-static $P spec.csi.volumeHandle static:models/mistral-7b-instruct \
    && is overlays-static $P $a.bucketName models && is overlays-static $P $a.prefix mistral-7b-instruct \
    && val overlays-static $P $a.endpointUrl | grep -qE '^https?://' && [ -n "$(val overlays-static $P $a.region)" ] \
    && val overlays-static $P $a.metadataTtl \
    && [ "$(vals overlays-static $P spec.accessModes)" = ReadOnlyMany ] && is overlays-static $P spec.storageClassName '' \
    && is overlays-static $P spec.csi.nodeStageSecretRef.name nacre-s3-credentials \
    && is overlays-static $P spec.csi.nodeStageSecretRef.namespace nacre-system \
    && [ -n "$(vals overlays-static $P spec.mountOptions)" ]
}
check "static: PV mistral-7b-static: nacre.csi.dev, volumeHandle, attributes, ReadOnlyMany, secret, mount options" t_static_pv
t_static_claim() {
  t_claim overlays-static PersistentVolumeClaim/mistral-7b-instruct ReadOnlyMany '' \
    && is overlays-static PersistentVolumeClaim/mistral-7b-instruct spec.volumeName mistral-7b-static \
    && is overlays-static $P spec.claimRef.name mistral-7b-instruct && is overlays-static $P spec.claimRef.namespace default
}
check "static: claim mistral-7b-instruct binds the PV by volumeName, ReadOnlyMany" t_static_claim

# The workshop: vLLM over the static volume.
V=Deployment/vllm-mistral
t_vllm_server() {
  local c; c=$(container examples-vllm $V vllm) || return 1
  has_obj examples-vllm $P && has_obj examples-vllm PersistentVolumeClaim/mistral-7b-instruct \
    && val examples-vllm $V "$c.image" | grep -q '^vllm/vllm-openai:' \
    && args_have examples-vllm $V vllm --model /models && args_have examples-vllm $V vllm --served-model-name mistral-7b-instruct \
    && is examples-vllm $V "$c.resources.limits.nvidia.com/gpu" 1
}
check "vllm: vllm/vllm-openai serving /models as mistral-7b-instruct on one GPU, with the static volume" t_vllm_server
t_vllm_models() {
  local m v
  m=$(mount_of examples-vllm $V vllm /models) && is examples-vllm $V "$m.readOnly" true \
    && v=$(volume_of examples-vllm $V "$(val examples-vllm $V "$m.name")") \
    && is examples-vllm $V "$v.persistentVolumeClaim.claimName" mistral-7b-instruct \
    && is examples-vllm $V "$v.persistentVolumeClaim.readOnly" true \
    && is examples-vllm $V "$m.mountPropagation" HostToContainer
}
check "vllm: the claim mistral-7b-instruct mounted read-only at /models (HostToContainer: repairs reach it)" t_vllm_models
t_vllm_probe() {
  local c; c=$(container examples-vllm $V vllm) || return 1
  is examples-vllm $V "$c.readinessProbe.httpGet.path" /health \
    && [ "$(port_number examples-vllm $V vllm "$(val examples-vllm $V "$c.readinessProbe.httpGet.port")")" = 8000 ]
}
check "vllm: readiness probe GET /health on port 8000" t_vllm_probe
t_vllm_service() {
  local s=Service/vllm-mistral k n=0 c
  c=$(container examples-vllm $V vllm) || return 1
  is examples-vllm $s 'spec.ports[0].port' 8000 || return 1
  [ "$(port_number examples-vllm $V vllm "$(val examples-vllm $s 'spec.ports[0].targetPort')")" = 8000 ] \
    || { echo "$s targetPort $(val examples-vllm $s 'spec.ports[0].targetPort') is not the server's port 8000"; return 1; }
  for k in $(keys examples-vllm $s spec.selector); do
    n=$((n + 1))
    is examples-vllm $V "spec.template.metadata.labels.$k" "$(val examples-vllm $s "spec.selector.$k")" || return 1
  done
  [ "$n" -gt 0 ]
}
check "vllm: Service vllm-mistral on port 8000 selects the Deployment's pods" t_vllm_service

# The credentials example.
t_credentials() {
  local s=Secret/nacre-s3-credentials
  is credentials $s metadata.namespace nacre-system && val credentials $s stringData.accessKeyId \
    && val credentials $s stringData.secretAccessKey
}
check "credentials: Secret nacre-system/nacre-s3-credentials with accessKeyId and secretAccessKey" t_credentials

echo "elapsed $((SECONDS - started)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
