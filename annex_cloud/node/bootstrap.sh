#!/bin/bash
# condor-annex instance bootstrap. The launch templates' user data (templates/node_bootstrap.py)
# fetches it from the stack's code bucket, checks its SHA-256, exports ANNEX_BUCKET and
# ANNEX_REGION and runs it from /usr/local/libexec/condor-annex. Modes:
#   boot (default)  identity and tags from IMDSv2, the timers, the annex's settings (annex.env)
#                   from S3, every value checked, HTCondor installed if absent, the security
#                   material from S3, the configuration rendered from the template below, start.
#   watchdog        every minute: power off once the lease tag has passed or is gone, or has been
#                   unreadable for LEASE_UNREADABLE_LIMIT seconds in a row; re-fetch the token so
#                   one re-minted by `extend` is used.
#   deadman         every minute until joined: power off if the startd is not in the pool within
#                   ANNEX_DEADMAN_SECONDS of boot (kept between DEADMAN_MIN and DEADMAN_MAX).
#   poweroff REASON log and power off (HTCondor's master runs this when it exits).
#   build           on the builder `annex-admin build-image` launches (its user data, never a
#                   node's, asks for this mode): install HTCondor of ANNEX_HTCONDOR_SERIES and the
#                   node files (this script, the watchdog and dead-man units, enabled for the next
#                   boot), configure no pool, record the image (IMAGE_RECORD), report the result
#                   with a PUT to ANNEX_BUILD_RESULT_URL (a presigned S3 URL) and power off, which
#                   stops the builder (its launch asks for stop, not terminate).
# On an image build-image made, boot finds HTCondor installed and runs no package manager; a node
# whose HTCondor is older than the series this script asks for installs that series first.
# Environment (instance and tests): ANNEX_ROOT prefixes every path written; ANNEX_IMDS_URL,
# ANNEX_POWEROFF_CMD, ANNEX_SYSTEMCTL, ANNEX_CONDOR_STATUS replace the service and commands;
# ANNEX_NOW (epoch seconds) replaces the clock for the watchdog and dead-man decisions.
# annex.env is parsed, never sourced, and each of its values must match its pattern: the node's
# HTCondor configuration is this script's fixed template filled with checked values, nothing else.
set -euo pipefail
umask 022
# Patterns, ranges and case tests mean the same in every locale.
export LC_ALL=C
# With bash 5.2's default, "&" in a ${var//pattern/replacement} stands for the match; checked
# values hold none, and none is wanted.
shopt -u patsub_replacement 2>/dev/null || true

readonly ROOT="${ANNEX_ROOT:-}"
readonly IMDS_URL="${ANNEX_IMDS_URL:-http://169.254.169.254}"
read -r -a POWEROFF_CMD <<<"${ANNEX_POWEROFF_CMD:-systemctl poweroff}"
read -r -a SYSTEMCTL <<<"${ANNEX_SYSTEMCTL:-systemctl}"
read -r -a CONDOR_STATUS <<<"${ANNEX_CONDOR_STATUS:-condor_status}"
read -r -a NFT <<<"${ANNEX_NFT:-nft}"

# Paths on the instance, as annex_cloud/node/config.py names them (a test keeps them equal).
readonly LIBEXEC=/usr/local/libexec/condor-annex
readonly SCRIPT_PATH=$LIBEXEC/bootstrap.sh
readonly MASTER_SHUTDOWN_SCRIPT=$LIBEXEC/master-shutdown.sh
readonly CONFIG_DIR=/etc/condor/config.d
readonly NODE_CONFIG=$CONFIG_DIR/50-condor-annex.conf
readonly TOKEN_DIR=/etc/condor/tokens.d
readonly TOKEN_PATH=$TOKEN_DIR/condor-annex.token
readonly PASSWORD_DIR=/etc/condor/passwords.d
readonly PASSWORD_PATH=$PASSWORD_DIR/POOL
readonly STATE=/var/lib/condor-annex
readonly ENV_COPY=$STATE/annex.env
readonly LOG_DIR=/var/log/condor-annex
readonly UNIT_DIR=/etc/systemd/system
readonly OS_RELEASE=/etc/os-release
# Written by build mode into the image: when, with which HTCondor, by which bootstrap.
readonly IMAGE_RECORD=/etc/condor-annex/image.env

# As templates/contract.py names them.
readonly TAG_ANNEX_NAME=htcondor:AnnexName
readonly TAG_PROJECT=htcondor:annex:project
readonly TAG_EXPIRY=htcondor:annex:expiry
readonly TAG_IDLE=htcondor:annex:idle
readonly NODE_ENV_OBJECT=annex.env
readonly TOKEN_OBJECT=security/token
readonly PASSWORD_OBJECT=security/pool_password

# As annex_cloud/node/config.py checks them (a test keeps them equal): every value the node is
# configured from, tags included, matches its pattern and length, or the node powers off before
# HTCondor starts. None lets a quote, backslash, $, |, space or newline through.
readonly MAX_VALUE_LENGTH=255
readonly ANNEX_NAME_RE='^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'
readonly PROJECT_ID_RE='^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'
readonly OWNER_RE='^[A-Za-z0-9_][A-Za-z0-9._@+=,-]{0,63}$'
readonly COLLECTOR_HOST_RE='^([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?(\?sock=[A-Za-z0-9_-]+)?(, ?([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?(\?sock=[A-Za-z0-9_-]+)?)*$'
readonly TRUST_DOMAIN_RE='^([A-Za-z0-9][A-Za-z0-9._:@-]*(, ?[A-Za-z0-9][A-Za-z0-9._:@-]*)*|([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?(\?sock=[A-Za-z0-9_-]+)?(, ?([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?(\?sock=[A-Za-z0-9_-]+)?)*)$'
readonly SECURITY_RE='^(idtoken|password)$'
readonly SECONDS_RE='^[0-9]{1,9}$'
readonly IDLE_MIN=60
readonly IDLE_MAX=86400
readonly INSTANCE_ID_RE='^i-[0-9a-f]{8,17}$'
# annex.env's keys, as annex_cloud/node/config.py writes them; any other line is refused.
readonly SETTING_KEYS=" ANNEX_NAME ANNEX_PROJECT ANNEX_OWNER ANNEX_COLLECTOR_HOST ANNEX_TRUST_DOMAIN ANNEX_SECURITY ANNEX_IDLE_SECONDS ANNEX_DEADMAN_SECONDS "
# As annex_cloud/expiry.py's EXPIRY_PATTERN (a test keeps them equal): the lease's one format.
readonly EXPIRY_RE='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$'

# As annex_cloud/guardrails.py bounds them (a test keeps them equal), in seconds.
readonly LEASE_UNREADABLE_LIMIT=900
readonly DEADMAN_DEFAULT=1800
readonly DEADMAN_MIN=300
readonly DEADMAN_MAX=14400

readonly HTCONDOR_SERIES=24.0 # long-term-support series, installed when none is present
# As annex_admin/image.py's SERIES_PATTERN (a test keeps them equal): N.0 is a long-term-support
# series, N.x the feature releases of N (N.1 on).
readonly SERIES_RE='^[0-9]{1,3}[.](0|x)$'
readonly VERSION_RE='^([0-9]+)[.]([0-9]+)[.][0-9]+$'
# Where build mode reports (a presigned S3 URL: no quote, space or backslash).
readonly RESULT_URL_RE='^https?://[A-Za-z0-9._~:/?#@!&+,;=%-]+$'

MODE=boot
LOG_FILE=bootstrap.log
declare -A SETTING=() # annex.env, once read_settings has checked it
IMDS_TOKEN=""
IMDS_BODY=""
CURL_RETRY=() # boot waits for IMDS; the watchdog tries once a minute

log() {
  local line
  line="$(date -u +%Y-%m-%dT%H:%M:%SZ) condor-annex $MODE: $*"
  # stderr reaches the console even from inside a command substitution.
  printf '%s\n' "$line" >&2
  if mkdir -p "$ROOT$LOG_DIR" 2>/dev/null; then
    printf '%s\n' "$line" >>"$ROOT$LOG_DIR/$LOG_FILE" || true
  fi
}

fail() {
  log "ERROR: $*"
  exit 1
}

# A value outside its rule: name it and stop (exit 2); at boot the node then powers off.
refuse() {
  log "REFUSED: $*"
  exit 2
}

# Outside text (tags, files) made safe for one log line.
printable() {
  local text="${1:0:80}"
  printf '%s' "${text//[^[:graph:] ]/?}"
}

now_epoch() {
  if [[ -z "${ANNEX_NOW:-}" ]]; then
    date +%s
  elif [[ "$ANNEX_NOW" =~ ^[0-9]+$ ]]; then
    printf '%s\n' "$ANNEX_NOW"
  else
    fail "ANNEX_NOW must be epoch seconds"
  fi
}

power_off() {
  log "powering off: $*"
  "${POWEROFF_CMD[@]}"
}

# --- IMDSv2 only: a session token first, then every GET carries it.

imds_token() {
  IMDS_TOKEN="$(curl -sS --fail --max-time 3 "${CURL_RETRY[@]}" -X PUT \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$IMDS_URL/latest/api/token")" &&
    [[ -n "$IMDS_TOKEN" ]]
}

# Sets IMDS_BODY; returns 0 found, 2 not there (404), 1 IMDS failed.
imds_get() {
  local out status
  out="$(curl -sS --max-time 3 "${CURL_RETRY[@]}" -w '\n%{http_code}' \
    -H "X-aws-ec2-metadata-token: $IMDS_TOKEN" "$IMDS_URL/latest/$1")" || out=$'\n000'
  status="${out##*$'\n'}"
  IMDS_BODY="${out%$'\n'*}"
  case "$status" in
    200) return 0 ;;
    404) return 2 ;;
    *) return 1 ;;
  esac
}

required_tag() {
  local rc=0
  imds_get "meta-data/tags/instance/$1" || rc=$?
  case "$rc" in
    0) printf '%s\n' "$IMDS_BODY" ;;
    2) fail "tag $1 is missing (are instance metadata tags on?)" ;;
    *) fail "could not read tag $1 from instance metadata" ;;
  esac
}

# Value of KEY in a KEY=VALUE file, read line by line.
env_value() {
  local line
  [[ -r "$2" ]] || return 1
  while IFS= read -r line || [[ -n "$line" ]]; do
    if [[ "$line" == "$1="* ]]; then
      printf '%s\n' "${line#*=}"
      return 0
    fi
  done <"$2"
  return 1
}

# Epoch seconds of an ISO 8601 UTC time like 2026-12-18T23:59:00Z; fails on anything else,
# including what date accepts and Python does not: impossible dates, and the year 0.
parse_expiry() {
  [[ "$1" =~ $EXPIRY_RE && "${1:0:4}" != 0000 ]] || return 1
  date -u -d "${1:0:10} ${1:11:8}" +%s 2>/dev/null
}

# Copies annexes/PROJECT/ANNEX/NAME to DEST with MODE, atomically, never world-readable meanwhile.
fetch_object() {
  local key="annexes/$1/$2/$3" dest="$4" tmp
  tmp="$(dirname "$dest")/.$(basename "$dest").part"
  if ! (umask 077 && aws s3 cp --only-show-errors --region "$ANNEX_REGION" \
    "s3://$ANNEX_BUCKET/$key" "$tmp" >/dev/null); then
    rm -f "$tmp"
    return 1
  fi
  chmod "$5" "$tmp"
  mv -f "$tmp" "$dest"
}

# --- boot

read_identity() {
  local rc=0 expiry idle
  imds_get meta-data/instance-id || rc=$?
  ((rc == 0)) || fail "could not read the instance id"
  INSTANCE_ID="$IMDS_BODY"
  [[ "$INSTANCE_ID" =~ $INSTANCE_ID_RE ]] || fail "odd instance id $(printable "$INSTANCE_ID")"
  ANNEX_NAME="$(required_tag "$TAG_ANNEX_NAME")"
  [[ "$ANNEX_NAME" =~ $ANNEX_NAME_RE ]] || refuse "unusable annex name $(printable "$ANNEX_NAME")"
  PROJECT_ID="$(required_tag "$TAG_PROJECT")"
  [[ "$PROJECT_ID" =~ $PROJECT_ID_RE ]] || refuse "unusable project id $(printable "$PROJECT_ID")"
  expiry="$(required_tag "$TAG_EXPIRY")"
  parse_expiry "$expiry" >/dev/null || refuse "the lease tag is not a UTC time: $(printable "$expiry")"
  idle="$(required_tag "$TAG_IDLE")"
  log "instance $INSTANCE_ID, annex $ANNEX_NAME, project $PROJECT_ID:" \
    "lease until $(printable "$expiry"), idle shutdown after $(printable "$idle") s"
  printf '%s\n' "$INSTANCE_ID" >"$ROOT$STATE/instance-id"
}

write_timer() { # NAME DESCRIPTION MODE
  cat >"$ROOT$UNIT_DIR/$1.service" <<EOF
[Unit]
Description=condor-annex $2

[Service]
Type=oneshot
Environment=ANNEX_BUCKET=$ANNEX_BUCKET ANNEX_REGION=$ANNEX_REGION
ExecStart=$SCRIPT_PATH $3
StandardOutput=journal+console
StandardError=journal+console
EOF
  cat >"$ROOT$UNIT_DIR/$1.timer" <<EOF
[Unit]
Description=condor-annex $2, every minute

[Timer]
OnActiveSec=1min
OnUnitActiveSec=1min
AccuracySec=5s

[Install]
WantedBy=timers.target
EOF
  chmod 0644 "$ROOT$UNIT_DIR/$1".*
}

# Before the slow steps, so a node stuck installing or configuring is still bounded.
install_guardrails() {
  log "installing the lease watchdog and the dead-man"
  install_node_files
  "${SYSTEMCTL[@]}" enable --now condor-annex-watchdog.timer condor-annex-deadman.timer
}

# This script, HTCondor's master shutdown script and the two timers' units.
install_node_files() {
  install -d -m 0755 "$ROOT$LIBEXEC" "$ROOT$UNIT_DIR"
  if [[ ! "${BASH_SOURCE[0]}" -ef "$ROOT$SCRIPT_PATH" ]]; then
    install -m 0755 "${BASH_SOURCE[0]}" "$ROOT$SCRIPT_PATH"
  fi
  cat >"$ROOT$MASTER_SHUTDOWN_SCRIPT" <<EOF
#!/bin/sh
# DEFAULT_MASTER_SHUTDOWN_SCRIPT: condor_master runs this instead of exiting.
exec $SCRIPT_PATH poweroff "HTCondor master exited (idle shutdown or stop)"
EOF
  chmod 0755 "$ROOT$MASTER_SHUTDOWN_SCRIPT"
  write_timer condor-annex-watchdog "lease watchdog" watchdog
  write_timer condor-annex-deadman "dead-man (join the pool or power off)" deadman
  "${SYSTEMCTL[@]}" daemon-reload
}

# Jobs run as their owner, never as root: only root (HTCondor's daemons, this script) may reach
# the metadata service, so no job can take the node role's credentials (its project's material).
restrict_metadata_to_root() {
  local rules="table inet condor_annex {
  chain output {
    type filter hook output priority 0; policy accept;
    ip daddr 169.254.169.254 meta skuid != 0 drop
  }
}"
  if [[ -n "${ANNEX_NFT:-}" ]] || command -v nft >/dev/null 2>&1; then
    printf '%s\n' "$rules" | "${NFT[@]}" -f - || fail "could not restrict the metadata service to root"
  elif command -v iptables >/dev/null 2>&1; then
    iptables -A OUTPUT -d 169.254.169.254 -m owner ! --uid-owner 0 -j DROP ||
      fail "could not restrict the metadata service to root"
  else
    fail "neither nft nor iptables is available to restrict the metadata service to root"
  fi
  log "instance metadata restricted to root"
}

# The installed HTCondor's version (like 24.0.3), or nothing when none can be read.
htcondor_version() {
  local out
  command -v condor_version >/dev/null 2>&1 || return 0
  out="$(condor_version 2>/dev/null | sed -n 's/^[$]CondorVersion: \([0-9][0-9.]*\) .*$/\1/p' | head -n 1)" || true
  [[ "$out" =~ $VERSION_RE ]] && printf '%s\n' "$out"
  return 0
}

# The first version of SERIES: N.0.0 for N.0, N.1.0 for N.x.
series_floor() {
  if [[ "$1" == *.x ]]; then
    printf '%s.1.0\n' "${1%%.*}"
  else
    printf '%s.0\n' "$1"
  fi
}

# VERSION SERIES: is the version at least what the series asks (N.0: N.0.0 on; N.x: N.1.0 on)?
version_meets_series() {
  local major minor want_major want_minor=0
  [[ "$1" =~ $VERSION_RE ]] || return 1
  major=$((10#${BASH_REMATCH[1]}))
  minor=$((10#${BASH_REMATCH[2]}))
  [[ "$2" =~ $SERIES_RE ]] || return 1
  want_major=$((10#${2%%.*}))
  [[ "$2" == *.x ]] && want_minor=1
  ((major > want_major || (major == want_major && minor >= want_minor)))
}

# HTCondor's own repository, through its release RPM, for SERIES. An installed HTCondor of that
# series or newer (an image build-image made) is used as it is: no package manager runs. An older
# one is upgraded from the series' repository, and must then meet it.
install_htcondor() {
  local series="$1" installed="" id version platform
  if command -v condor_master >/dev/null 2>&1; then
    installed="$(htcondor_version)"
    if [[ -z "$installed" ]]; then
      log "HTCondor is already installed (its version could not be read); using it"
      return 0
    elif version_meets_series "$installed" "$series"; then
      log "HTCondor $installed is already installed (series $series or newer): nothing to install"
      return 0
    fi
    log "HTCondor $installed on this image is older than series $series, which this bootstrap asks" \
      "for: upgrading from the $series repository (rebuild the image with annex-admin build-image)"
  fi
  id="$(sed -n 's/^ID="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT$OS_RELEASE")"
  version="$(sed -n 's/^VERSION_ID="\{0,1\}\([0-9]*\).*$/\1/p' "$ROOT$OS_RELEASE")"
  case "$id:$version" in
    amzn:2023) platform=amzn2023 ;;
    rhel:[89] | rocky:[89] | almalinux:[89] | centos:9) platform="el$version" ;;
    *) fail "no HTCondor install recipe for $(printable "$id $version")" ;;
  esac
  log "installing HTCondor $series for $platform"
  if [[ "$platform" == el* ]]; then # EPEL and CRB carry some dependencies
    dnf install -y epel-release ||
      dnf install -y "https://dl.fedoraproject.org/pub/epel/epel-release-latest-$version.noarch.rpm"
    dnf config-manager --set-enabled crb || dnf config-manager --set-enabled powertools || true
  fi
  dnf install -y "https://research.cs.wisc.edu/htcondor/repo/$series/htcondor-release-current.$platform.noarch.rpm"
  if [[ -n "$installed" ]]; then
    dnf upgrade -y condor
  else
    dnf install -y condor
  fi
  command -v condor_master >/dev/null 2>&1 || fail "condor_master missing after the install"
  installed="$(htcondor_version)"
  [[ -n "$installed" ]] || fail "could not read the version of the HTCondor just installed"
  version_meets_series "$installed" "$series" ||
    fail "HTCondor $installed is still older than series $series after the install"
  log "installed HTCondor $installed"
}

# Which image this node runs, and whether annex-admin build-image made it (its record).
log_image() {
  local ami="unknown" rc=0 built version
  imds_get meta-data/ami-id || rc=$?
  if ((rc == 0)) && [[ "$IMDS_BODY" =~ ^ami-[0-9a-f]{8,17}$ ]]; then
    ami="$IMDS_BODY"
  fi
  if built="$(env_value BUILT_AT "$ROOT$IMAGE_RECORD")"; then
    version="$(env_value HTCONDOR_VERSION "$ROOT$IMAGE_RECORD")" || version=unknown
    log "image $ami: built by annex-admin build-image at $(printable "$built") with HTCondor $(printable "$version")"
  else
    log "image $ami: not built by annex-admin build-image (HTCondor is installed at boot if missing)"
  fi
}

# Is $1 one of annex.env's keys?
is_setting_key() {
  [[ "$1" =~ ^[A-Z_]+$ && "$SETTING_KEYS" == *" $1 "* ]]
}

# Reads annex.env into SETTING: blank lines, comments, and KEY=VALUE lines of known keys, each
# key once. Anything else is refused: the file holds values, never configuration.
read_settings() {
  local line key number=0
  SETTING=()
  while IFS= read -r line || [[ -n "$line" ]]; do
    number=$((number + 1))
    [[ -z "$line" || "$line" == "#"* ]] && continue
    key="${line%%=*}"
    if [[ "$line" != *=* ]] || ! is_setting_key "$key"; then
      refuse "$NODE_ENV_OBJECT line $number is no setting: $(printable "$line")"
    fi
    [[ ! -v "SETTING[$key]" ]] || refuse "$NODE_ENV_OBJECT sets $key twice"
    SETTING[$key]="${line#*=}"
  done <"$1"
}

# KEY PATTERN: the setting is present, short enough and matches its pattern.
check_text() {
  [[ -v "SETTING[$1]" ]] || refuse "$NODE_ENV_OBJECT has no $1"
  local value="${SETTING[$1]}"
  ((${#value} <= MAX_VALUE_LENGTH)) || refuse "$1 is ${#value} characters long (at most $MAX_VALUE_LENGTH)"
  [[ "$value" =~ $2 ]] || refuse "$1 $(printable "$value") does not match $2"
}

# KEY LOW HIGH: a whole number of seconds within the bounds (kept without leading zeros).
check_seconds() {
  check_text "$1" "$SECONDS_RE"
  local value=$((10#${SETTING[$1]}))
  ((value >= $2 && value <= $3)) || refuse "$1 $value is outside $2-$3 seconds"
  SETTING[$1]=$value
}

check_settings() {
  check_text ANNEX_NAME "$ANNEX_NAME_RE"
  check_text ANNEX_PROJECT "$PROJECT_ID_RE"
  check_text ANNEX_OWNER "$OWNER_RE"
  check_text ANNEX_COLLECTOR_HOST "$COLLECTOR_HOST_RE"
  check_text ANNEX_TRUST_DOMAIN "$TRUST_DOMAIN_RE"
  check_text ANNEX_SECURITY "$SECURITY_RE"
  check_seconds ANNEX_IDLE_SECONDS "$IDLE_MIN" "$IDLE_MAX"
  check_seconds ANNEX_DEADMAN_SECONDS "$DEADMAN_MIN" "$DEADMAN_MAX"
  [[ "${SETTING[ANNEX_NAME]}" == "$ANNEX_NAME" && "${SETTING[ANNEX_PROJECT]}" == "$PROJECT_ID" ]] ||
    refuse "$NODE_ENV_OBJECT names another annex"
}

fetch_settings() {
  log "fetching s3://$ANNEX_BUCKET/annexes/$PROJECT_ID/$ANNEX_NAME/$NODE_ENV_OBJECT"
  fetch_object "$PROJECT_ID" "$ANNEX_NAME" "$NODE_ENV_OBJECT" "$ROOT$ENV_COPY" 0644 ||
    fail "could not fetch $NODE_ENV_OBJECT"
  read_settings "$ROOT$ENV_COPY"
  check_settings
  log "settings checked: collector ${SETTING[ANNEX_COLLECTOR_HOST]}, security ${SETTING[ANNEX_SECURITY]}," \
    "jobs of ${SETTING[ANNEX_OWNER]}"
}

fetch_material() {
  case "${SETTING[ANNEX_SECURITY]}" in
    idtoken)
      install -d -m 0700 "$ROOT$TOKEN_DIR"
      fetch_object "$PROJECT_ID" "$ANNEX_NAME" "$TOKEN_OBJECT" "$ROOT$TOKEN_PATH" 0600 ||
        fail "could not fetch the annex's token"
      log "installed the annex's IDTOKEN as $TOKEN_PATH"
      ;;
    password)
      install -d -m 0700 "$ROOT$PASSWORD_DIR"
      fetch_object "$PROJECT_ID" "$ANNEX_NAME" "$PASSWORD_OBJECT" "$ROOT$PASSWORD_PATH" 0600 ||
        fail "could not fetch the pool password"
      log "installed the pool password as $PASSWORD_PATH"
      ;;
  esac
}

# The node's HTCondor configuration. @NAME@ stands for a checked setting or one of this script's
# constants; nothing else is ever written into it. What the knobs do:
# - an execute node with partitionable slots and no inbound port: its daemons register with the
#   collector's connection broker (CCB), and every connection to them is made in reverse;
# - AnnexName, IsAnnex and EC2InstanceID in the startd's and master's ads (condor_status -annex);
# - START: only the owner's jobs (=?= refuses a job ad without Owner rather than leave it undefined);
# - idle shutdown: the startd exits once no slot has been claimed for the idle time; the master,
#   seeing no startd once it has had a minute to start one, exits too and runs the shutdown
#   script as root instead, which powers the instance off (and so terminates it);
# - security: authentication, encryption and integrity required; FS lets root here run
#   condor_reconfig and condor_off; schedds reach the startd with the claim's own session key
#   (an IDTOKEN node holds no signing key, so could not verify a token presented to it); the
#   annex's own material is root's alone (mode 0600), and the watchdog installs a re-minted token.
config_template() {
  cat <<'EOF'
use ROLE : Execute
use FEATURE : PartitionableSlot
COLLECTOR_HOST = @COLLECTOR_HOST@
CCB_ADDRESS = $(COLLECTOR_HOST)
USE_SHARED_PORT = True
AnnexName = "@ANNEX_NAME@"
AnnexProject = "@PROJECT_ID@"
IsAnnex = True
EC2InstanceID = "@INSTANCE_ID@"
STARTD_ATTRS = $(STARTD_ATTRS) AnnexName AnnexProject IsAnnex EC2InstanceID
MASTER_ATTRS = $(MASTER_ATTRS) AnnexName AnnexProject IsAnnex EC2InstanceID
START = (TARGET.Owner =?= "@OWNER@")
STARTD_NOCLAIM_SHUTDOWN = @IDLE_SECONDS@
MASTER.DAEMON_SHUTDOWN_FAST = (STARTD_StartTime == 0) && ((time() - DaemonStartTime) > 60)
DEFAULT_MASTER_SHUTDOWN_SCRIPT = @MASTER_SHUTDOWN_SCRIPT@
TRUST_DOMAIN = @TRUST_DOMAIN@
SEC_DEFAULT_AUTHENTICATION_METHODS = FS, @AUTHENTICATION@
SEC_CLIENT_AUTHENTICATION_METHODS = FS, @AUTHENTICATION@
SEC_DEFAULT_AUTHENTICATION = REQUIRED
SEC_DEFAULT_ENCRYPTION = REQUIRED
SEC_DEFAULT_INTEGRITY = REQUIRED
SEC_READ_AUTHENTICATION = OPTIONAL
SEC_ENABLE_MATCH_PASSWORD_AUTHENTICATION = True
ALLOW_READ = *
ALLOW_ADMINISTRATOR = root@$(UID_DOMAIN), condor_pool@*
ALLOW_DAEMON = $(ALLOW_ADMINISTRATOR), condor@*
EOF
  case "${SETTING[ANNEX_SECURITY]}" in
    idtoken)
      cat <<'EOF'
SEC_TOKEN_DIRECTORY = @TOKEN_DIR@
SEC_TOKEN_SYSTEM_DIRECTORY = @TOKEN_DIR@
EOF
      ;;
    password)
      cat <<'EOF'
SEC_PASSWORD_FILE = @PASSWORD_PATH@
EOF
      ;;
  esac
}

# The template with every placeholder replaced; only after check_settings.
render_config() {
  local text authentication=IDTOKENS
  [[ "${SETTING[ANNEX_SECURITY]}" == password ]] && authentication=PASSWORD
  text="$(config_template)"
  text="${text//@COLLECTOR_HOST@/${SETTING[ANNEX_COLLECTOR_HOST]}}"
  text="${text//@ANNEX_NAME@/${SETTING[ANNEX_NAME]}}"
  text="${text//@PROJECT_ID@/${SETTING[ANNEX_PROJECT]}}"
  text="${text//@INSTANCE_ID@/$INSTANCE_ID}"
  text="${text//@OWNER@/${SETTING[ANNEX_OWNER]}}"
  text="${text//@IDLE_SECONDS@/${SETTING[ANNEX_IDLE_SECONDS]}}"
  text="${text//@MASTER_SHUTDOWN_SCRIPT@/$MASTER_SHUTDOWN_SCRIPT}"
  text="${text//@TRUST_DOMAIN@/${SETTING[ANNEX_TRUST_DOMAIN]}}"
  text="${text//@AUTHENTICATION@/$authentication}"
  text="${text//@TOKEN_DIR@/$TOKEN_DIR}"
  text="${text//@PASSWORD_PATH@/$PASSWORD_PATH}"
  printf '%s\n' "$text"
}

write_node_config() {
  local tmp="$ROOT$CONFIG_DIR/.50-condor-annex.conf.part"
  install -d -m 0755 "$ROOT$CONFIG_DIR"
  render_config >"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$ROOT$NODE_CONFIG"
  log "wrote $NODE_CONFIG"
}

# A node that cannot finish booting will never run a job: say why and stop paying for it.
boot_exit() {
  local status=$?
  if ((status != 0)); then
    log "boot failed (exit status $status); this instance cannot join the pool"
    power_off "boot failed"
  fi
}

boot() {
  trap boot_exit EXIT
  CURL_RETRY=(--retry 10 --retry-delay 2 --retry-connrefused)
  install -d -m 0755 "$ROOT$STATE"
  log "starting (bucket ${ANNEX_BUCKET:-unset}, region ${ANNEX_REGION:-unset})"
  [[ "${ANNEX_BUCKET:-}" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || fail "ANNEX_BUCKET unset"
  [[ "${ANNEX_REGION:-}" =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]] || fail "ANNEX_REGION unset"
  now_epoch >"$ROOT$STATE/booted-at"
  imds_token || fail "the instance metadata service did not answer"
  read_identity
  install_guardrails
  fetch_settings
  log_image
  install_htcondor "$HTCONDOR_SERIES"
  log "running HTCondor $(htcondor_version | grep . || echo "of unknown version")"
  fetch_material
  write_node_config
  restrict_metadata_to_root
  log "starting HTCondor"
  "${SYSTEMCTL[@]}" enable condor
  # restart: an image may have started HTCondor before this configuration existed.
  "${SYSTEMCTL[@]}" restart condor
  log "boot complete: waiting to join the pool"
}

# --- build (the builder of annex-admin build-image)

BUILD_RESULT="" # the last line logged before a failure, for the report

# STATUS LINE...: PUT "status=STATUS" and the lines to the presigned result URL (never logged:
# it is a capability). A report that cannot be sent is logged; annex-admin then waits for the
# builder's stop and says no result came.
report_build() {
  local file
  file="$(mktemp)"
  printf 'status=%s\n' "$1" >"$file"
  shift
  (($# == 0)) || printf '%s\n' "$@" >>"$file"
  if ! curl -sS --fail --max-time 30 "${CURL_RETRY[@]}" -T "$file" "$ANNEX_BUILD_RESULT_URL" >/dev/null; then
    log "could not report the build's result"
  fi
  rm -f "$file"
}

write_image_record() { # VERSION SERIES
  local dir file
  dir="$ROOT$(dirname "$IMAGE_RECORD")"
  file="$ROOT$IMAGE_RECORD"
  install -d -m 0755 "$dir"
  printf 'BUILT_AT=%s\nHTCONDOR_VERSION=%s\nHTCONDOR_SERIES=%s\nBOOTSTRAP_SHA256=%s\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" "$2" "$(sha256sum "${BASH_SOURCE[0]}" | cut -d ' ' -f 1)" >"$file"
  chmod 0644 "$file"
  log "recorded the image: HTCondor $1 (series $2) in $IMAGE_RECORD"
}

build_exit() {
  local status=$?
  if ((status != 0)); then
    log "build failed (exit status $status)"
    if [[ "${ANNEX_BUILD_RESULT_URL:-}" =~ $RESULT_URL_RE ]]; then
      report_build failed "exit_status=$status" "reason=$(printable "$BUILD_RESULT")"
    fi
    power_off "build failed"
  fi
}

build() {
  local series version
  LOG_FILE=build.log
  trap build_exit EXIT
  CURL_RETRY=(--retry 10 --retry-delay 2 --retry-connrefused)
  series="${ANNEX_HTCONDOR_SERIES:-$HTCONDOR_SERIES}"
  build_step "building an image (bucket ${ANNEX_BUCKET:-unset}, region ${ANNEX_REGION:-unset}, series $(printable "$series"))"
  [[ "${ANNEX_BUILD_RESULT_URL:-}" =~ $RESULT_URL_RE ]] || fail "ANNEX_BUILD_RESULT_URL unset or not a URL"
  [[ "${ANNEX_BUCKET:-}" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || fail "ANNEX_BUCKET unset"
  [[ "${ANNEX_REGION:-}" =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]] || fail "ANNEX_REGION unset"
  [[ "$series" =~ $SERIES_RE ]] || fail "HTCondor series $(printable "$series") is not like 24.0 or 24.x"
  version_meets_series "$(series_floor "$series")" "$HTCONDOR_SERIES" ||
    fail "series $series is older than $HTCONDOR_SERIES, which nodes ask for"
  build_step "installing HTCondor $series"
  install_htcondor "$series"
  version="$(htcondor_version)"
  [[ -n "$version" ]] || fail "could not read the installed HTCondor's version"
  build_step "installing the node files (no pool is configured)"
  install_node_files
  # Enabled for the next boot, not started: on a node they run from the first minute, even
  # before the user data; on this builder they would stop it before the build ends.
  "${SYSTEMCTL[@]}" enable condor-annex-watchdog.timer condor-annex-deadman.timer
  # HTCondor starts only once a node's bootstrap has written its configuration.
  "${SYSTEMCTL[@]}" disable condor
  write_image_record "$version" "$series"
  # Nothing of this instance goes into the image: no state, no package cache.
  rm -rf "$ROOT$STATE" "$ROOT/var/cache/dnf"
  report_build ok "htcondor_version=$version" "htcondor_series=$series"
  log "build complete: HTCondor $version"
  power_off "build complete; annex-admin makes the image once the builder has stopped"
}

build_step() {
  BUILD_RESULT="$*"
  log "$*"
}

# --- watchdog

# Installs a re-minted token (after extend); a failed fetch keeps the old one.
refresh_token() {
  local project annex tmp="$ROOT$TOKEN_DIR/.condor-annex.token.new"
  [[ "$(env_value ANNEX_SECURITY "$ROOT$ENV_COPY")" == idtoken ]] || return 0
  project="$(env_value ANNEX_PROJECT "$ROOT$ENV_COPY")" || return 0
  annex="$(env_value ANNEX_NAME "$ROOT$ENV_COPY")" || return 0
  if [[ -z "${ANNEX_BUCKET:-}" || -z "${ANNEX_REGION:-}" ]]; then
    log "ANNEX_BUCKET or ANNEX_REGION unset; token not refreshed"
    return 0
  fi
  install -d -m 0700 "$ROOT$TOKEN_DIR"
  if ! fetch_object "$project" "$annex" "$TOKEN_OBJECT" "$tmp" 0600; then
    log "could not fetch the annex's token; keeping the installed one"
  elif cmp -s "$tmp" "$ROOT$TOKEN_PATH"; then
    rm -f "$tmp"
  else
    mv -f "$tmp" "$ROOT$TOKEN_PATH"
    log "installed a new IDTOKEN for the annex"
    if command -v condor_reconfig >/dev/null 2>&1; then
      condor_reconfig >/dev/null 2>&1 || log "condor_reconfig failed"
    fi
  fi
}

# Arguments NOW WHY: the lease could not be read. That is tolerated for LEASE_UNREADABLE_LIMIT
# seconds in a row, counted from the first failure the state file records; then the instance
# fails closed. A failure that cannot even be recorded fails closed at once.
lease_unreadable() {
  local now="$1" why="$2" since file="$ROOT$STATE/lease-unreadable-since"
  since="$(cat "$file" 2>/dev/null)" || since=""
  if [[ ! "$since" =~ ^[0-9]+$ ]] || ((since > now)); then
    since="$now"
    if ! { install -d -m 0755 "$ROOT$STATE" && printf '%s\n' "$now" >"$file"; } 2>/dev/null; then
      power_off "$why, and the failure cannot be recorded"
      return 0
    fi
  fi
  if ((now - since >= LEASE_UNREADABLE_LIMIT)); then
    power_off "$why for $((now - since)) s in a row"
  else
    log "$why; powering off if it stays so for $((since + LEASE_UNREADABLE_LIMIT - now)) s more"
  fi
}

watchdog() {
  local now rc=0 text expiry
  now="$(now_epoch)"
  if ! imds_token; then
    lease_unreadable "$now" "instance metadata unreachable"
    return 0
  fi
  imds_get "meta-data/tags/instance/$TAG_EXPIRY" || rc=$?
  if ((rc == 2)); then
    power_off "the lease tag $TAG_EXPIRY is missing"
    return 0
  elif ((rc != 0)); then
    lease_unreadable "$now" "could not read the lease tag"
    return 0
  fi
  # A stale record only makes a later outage end sooner: never a reason to skip the lease check.
  rm -f "$ROOT$STATE/lease-unreadable-since" || true
  text="$IMDS_BODY"
  if ! expiry="$(parse_expiry "$text")"; then
    power_off "the lease tag $TAG_EXPIRY is not a UTC time: $(printable "$text")"
  elif ((now >= expiry)); then
    power_off "the lease ended at $text"
  else
    log "lease ends at $text ($((expiry - now)) s left)"
    refresh_token
  fi
}

# --- dead-man

# The dead-man time annex.env asks for, kept between DEADMAN_MIN and DEADMAN_MAX (the broker checks
# the same bounds): a node never waits more than a few hours for the pool to take it.
bounded_deadman() {
  if [[ ! "$1" =~ $SECONDS_RE ]]; then
    log "dead-man time $(printable "$1") unusable; using $DEADMAN_DEFAULT s"
    printf '%s\n' "$DEADMAN_DEFAULT"
  elif ((10#$1 > DEADMAN_MAX)); then
    log "dead-man time $1 s is over the bound; using $DEADMAN_MAX s"
    printf '%s\n' "$DEADMAN_MAX"
  elif ((10#$1 < DEADMAN_MIN)); then
    log "dead-man time $1 s is under the bound; using $DEADMAN_MIN s"
    printf '%s\n' "$DEADMAN_MIN"
  else
    printf '%s\n' "$((10#$1))"
  fi
}

deadman() {
  [[ -e "$ROOT$STATE/joined" ]] && return 0
  local now booted limit id out
  now="$(now_epoch)"
  install -d -m 0755 "$ROOT$STATE"
  booted="$(cat "$ROOT$STATE/booted-at" 2>/dev/null)" || booted=""
  if [[ ! "$booted" =~ ^[0-9]+$ ]]; then # boot never recorded itself: count from now
    booted="$now"
    printf '%s\n' "$now" >"$ROOT$STATE/booted-at"
  fi
  limit="$(env_value ANNEX_DEADMAN_SECONDS "$ROOT$ENV_COPY")" || limit=""
  limit="$(bounded_deadman "$limit")"
  id="$(cat "$ROOT$STATE/instance-id" 2>/dev/null)" || id=""
  if [[ "$id" =~ $INSTANCE_ID_RE ]] &&
    out="$(timeout 50 "${CONDOR_STATUS[@]}" -startd -constraint "EC2InstanceID == \"$id\"" \
      -af Name 2>/dev/null)" && [[ -n "$out" ]]; then
    printf '%s\n' "$now" >"$ROOT$STATE/joined"
    log "the startd has joined the pool; the dead-man stands down"
    "${SYSTEMCTL[@]}" disable --now condor-annex-deadman.timer || log "could not stop the timer"
  elif ((now - booted >= limit)); then
    power_off "the startd has not joined the pool within $limit s of boot"
  else
    log "not in the pool yet; $((booted + limit - now)) s left"
  fi
}

main() {
  MODE="${1:-boot}"
  case "$MODE" in
    boot) boot ;;
    watchdog) watchdog ;;
    deadman) deadman ;;
    build) build ;;
    poweroff)
      shift
      power_off "${*:-requested}"
      ;;
    *)
      printf 'usage: %s [boot|watchdog|deadman|build|poweroff REASON]\n' "$0" >&2
      exit 2
      ;;
  esac
}

main "$@"
