#!/bin/bash
# condor-annex instance bootstrap: turns a fresh EC2 instance into an execute node of one annex,
# and keeps the annex's guardrails running on the instance itself.
#
# The region stack runs this as user data, after a header that exports ANNEX_BUCKET and
# ANNEX_REGION. Modes (first argument):
#   boot      (default) read this instance's identity and tags from instance metadata (IMDSv2),
#             install HTCondor if it is absent, fetch the annex's configuration and security
#             material from the stack's bucket, start HTCondor, and install the two timers below.
#   watchdog  (every minute) power off once the lease tag says the lease is over, or when the tag
#             is gone or unreadable; re-fetch the annex's token so a re-minted one is used.
#   deadman   (every minute until the node joins) power off when the startd has not joined the
#             pool within ANNEX_DEADMAN_SECONDS of boot.
#   poweroff  log the reason given and power off (HTCondor's master runs this when it exits).
#
# Settings from the environment, for the instance and for tests alike: ANNEX_ROOT is prefixed to
# every path written; ANNEX_IMDS_URL, ANNEX_POWEROFF_CMD, ANNEX_SYSTEMCTL, ANNEX_CONDOR_STATUS
# replace the metadata service and the commands used; ANNEX_NOW (epoch seconds) replaces the
# clock for the watchdog's and the dead-man's decisions.
#
# annex.env is parsed line by line, never sourced: it comes from a bucket the scientist writes.
set -euo pipefail
umask 022

readonly ROOT="${ANNEX_ROOT:-}"
readonly IMDS_URL="${ANNEX_IMDS_URL:-http://169.254.169.254}"
read -r -a POWEROFF_CMD <<<"${ANNEX_POWEROFF_CMD:-systemctl poweroff}"
read -r -a SYSTEMCTL <<<"${ANNEX_SYSTEMCTL:-systemctl}"
read -r -a CONDOR_STATUS <<<"${ANNEX_CONDOR_STATUS:-condor_status}"

# Where things live on the instance (ANNEX_ROOT goes in front when writing). The HTCondor paths
# are the ones annex_user/node_config.py renders into the node's configuration.
readonly LIBEXEC_DIR=/usr/local/libexec/condor-annex
readonly SCRIPT_PATH=$LIBEXEC_DIR/bootstrap.sh
readonly MASTER_SHUTDOWN_SCRIPT=$LIBEXEC_DIR/master-shutdown.sh
readonly CONFIG_DIR=/etc/condor/config.d
readonly NODE_CONFIG_PATH=$CONFIG_DIR/50-condor-annex.conf
readonly INSTANCE_CONFIG_PATH=$CONFIG_DIR/60-condor-annex-instance.conf
readonly TOKEN_DIR=/etc/condor/tokens.d
readonly TOKEN_PATH=$TOKEN_DIR/condor-annex.token
readonly PASSWORD_DIR=/etc/condor/passwords.d
readonly PASSWORD_PATH=$PASSWORD_DIR/POOL
readonly STATE_DIR=/var/lib/condor-annex
readonly ENV_COPY=$STATE_DIR/annex.env
readonly BOOTED_AT=$STATE_DIR/booted-at
readonly INSTANCE_ID_FILE=$STATE_DIR/instance-id
readonly JOINED_MARK=$STATE_DIR/joined
readonly LOG_DIR=/var/log/condor-annex
readonly LOG_FILE=$LOG_DIR/bootstrap.log
readonly UNIT_DIR=/etc/systemd/system

# templates/contract.py names these; keep them in step.
readonly TAG_ANNEX_NAME=htcondor:AnnexName
readonly TAG_PROJECT=htcondor:annex:project
readonly TAG_EXPIRY=htcondor:annex:expiry
readonly TAG_IDLE=htcondor:annex:idle
readonly ANNEX_PREFIX=annexes
readonly NODE_CONFIG_OBJECT=condor_config
readonly NODE_ENV_OBJECT=annex.env
readonly TOKEN_OBJECT=security/token
readonly PASSWORD_OBJECT=security/pool_password

# The same patterns as annex_user/node_config.py: values become S3 keys and log lines.
readonly ANNEX_NAME_RE='^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'
readonly PROJECT_ID_RE='^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'
readonly INSTANCE_ID_RE='^i-[0-9a-f]{8,17}$'
readonly EXPIRY_RE='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$'

readonly HTCONDOR_SERIES=24.0  # the long-term-support series installed when none is present
readonly DEFAULT_DEADMAN_SECONDS=1800

MODE=boot
IMDS_TOKEN=""
IMDS_BODY=""
# Boot can wait for the metadata service; the watchdog tries once and tries again next minute.
CURL_RETRY=()

log() {
    local line
    line="$(date -u +%Y-%m-%dT%H:%M:%SZ) condor-annex ${MODE}: $*"
    # stderr: the console sees it even from inside a command substitution.
    printf '%s\n' "$line" >&2
    if mkdir -p "$ROOT$LOG_DIR" 2>/dev/null; then
        printf '%s\n' "$line" >>"$ROOT$LOG_FILE" || true
    fi
}

fail() {
    log "ERROR: $*"
    exit 1
}

# Text from outside (tags, files) made safe for one log line.
printable() {
    local text="${1:0:80}"
    printf '%s' "${text//[^[:graph:] ]/?}"
}

now_epoch() {
    if [[ -n "${ANNEX_NOW:-}" ]]; then
        [[ "$ANNEX_NOW" =~ ^[0-9]+$ ]] || fail "ANNEX_NOW must be epoch seconds"
        printf '%s\n' "$ANNEX_NOW"
    else
        date +%s
    fi
}

power_off() {
    log "powering off: $*"
    "${POWEROFF_CMD[@]}"
}

# --- instance metadata (IMDSv2 only: a session token first, then every GET carries it) --------

imds_token() {
    IMDS_TOKEN="$(curl -sS --fail --max-time 3 "${CURL_RETRY[@]}" -X PUT \
        -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$IMDS_URL/latest/api/token")" || return 1
    [[ -n "$IMDS_TOKEN" ]]
}

# Sets IMDS_BODY. Returns 0 when found, 2 when the path does not exist, 1 when IMDS failed.
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

# A tag boot cannot do without: missing or unreadable stops the boot.
required_tag() {
    local rc=0
    imds_get "meta-data/tags/instance/$1" || rc=$?
    case "$rc" in
        0) printf '%s\n' "$IMDS_BODY" ;;
        2) fail "tag $1 is missing (are instance metadata tags enabled?)" ;;
        *) fail "could not read tag $1 from instance metadata" ;;
    esac
}

# --- local settings ----------------------------------------------------------------------------

# The value of KEY in a KEY=VALUE file; the file is read, never sourced.
env_value() {
    local key="$1" file="$2" line
    [[ -r "$file" ]] || return 1
    while IFS= read -r line || [[ -n "$line" ]]; do
        if [[ "$line" == "$key="* ]]; then
            printf '%s\n' "${line#*=}"
            return 0
        fi
    done <"$file"
    return 1
}

deadman_seconds() {
    local value
    value="$(env_value ANNEX_DEADMAN_SECONDS "$ROOT$ENV_COPY")" || value=$DEFAULT_DEADMAN_SECONDS
    [[ "$value" =~ ^[0-9]{1,6}$ ]] || value=$DEFAULT_DEADMAN_SECONDS
    printf '%s\n' "$value"
}

# Epoch seconds of an ISO 8601 UTC expiry such as 2026-12-18T23:59:00Z; fails on anything else.
parse_expiry() {
    [[ "$1" =~ $EXPIRY_RE ]] || return 1
    date -u -d "${1:0:10} ${1:11:8}" +%s 2>/dev/null
}

# --- S3 ------------------------------------------------------------------------------------------

# Copies one annex object to DEST with MODE, atomically; secrets are never world-readable,
# not even while being written.
fetch_object() {
    local key="$1" dest="$2" mode="$3" tmp
    tmp="$(dirname "$dest")/.$(basename "$dest").part"
    (
        umask 077
        aws s3 cp --only-show-errors --region "$ANNEX_REGION" \
            "s3://$ANNEX_BUCKET/$key" "$tmp" >/dev/null
    ) || {
        rm -f "$tmp"
        return 1
    }
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$dest"
}

annex_key() {
    printf '%s/%s/%s/%s\n' "$ANNEX_PREFIX" "$1" "$2" "$3"
}

check_stack_settings() {
    [[ "${ANNEX_BUCKET:-}" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] ||
        fail "ANNEX_BUCKET is not set to a bucket name"
    [[ "${ANNEX_REGION:-}" =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]] ||
        fail "ANNEX_REGION is not set to a region name"
}

# --- boot steps ----------------------------------------------------------------------------------

read_identity() {
    local rc=0
    imds_get meta-data/instance-id || rc=$?
    ((rc == 0)) || fail "could not read the instance id from instance metadata"
    INSTANCE_ID="$IMDS_BODY"
    [[ "$INSTANCE_ID" =~ $INSTANCE_ID_RE ]] || fail "unexpected instance id $(printable "$INSTANCE_ID")"
    ANNEX_NAME="$(required_tag "$TAG_ANNEX_NAME")"
    [[ "$ANNEX_NAME" =~ $ANNEX_NAME_RE ]] || fail "unusable annex name $(printable "$ANNEX_NAME")"
    PROJECT_ID="$(required_tag "$TAG_PROJECT")"
    [[ "$PROJECT_ID" =~ $PROJECT_ID_RE ]] || fail "unusable project id $(printable "$PROJECT_ID")"
    local expiry idle
    expiry="$(required_tag "$TAG_EXPIRY")"
    idle="$(required_tag "$TAG_IDLE")"
    log "instance $INSTANCE_ID of annex $ANNEX_NAME (project $PROJECT_ID):" \
        "lease until $(printable "$expiry"), idle shutdown after $(printable "$idle") s"
    printf '%s\n' "$INSTANCE_ID" >"$ROOT$INSTANCE_ID_FILE"
}

write_timer() {
    local name="$1" what="$2" mode="$3"
    cat >"$ROOT$UNIT_DIR/$name.service" <<EOF
[Unit]
Description=condor-annex $what

[Service]
Type=oneshot
Environment=ANNEX_BUCKET=$ANNEX_BUCKET ANNEX_REGION=$ANNEX_REGION
ExecStart=$SCRIPT_PATH $mode
StandardOutput=journal+console
StandardError=journal+console
EOF
    cat >"$ROOT$UNIT_DIR/$name.timer" <<EOF
[Unit]
Description=condor-annex $what, every minute

[Timer]
OnActiveSec=1min
OnUnitActiveSec=1min
AccuracySec=5s

[Install]
WantedBy=timers.target
EOF
    chmod 0644 "$ROOT$UNIT_DIR/$name.service" "$ROOT$UNIT_DIR/$name.timer"
}

# The timers go in before the slow steps, so an instance stuck installing or configuring
# HTCondor is still bounded by its lease and by the dead-man.
install_guardrails() {
    log "installing the lease watchdog and the dead-man"
    install -d -m 0755 "$ROOT$LIBEXEC_DIR" "$ROOT$UNIT_DIR"
    if [[ ! "${BASH_SOURCE[0]}" -ef "$ROOT$SCRIPT_PATH" ]]; then
        install -m 0755 "${BASH_SOURCE[0]}" "$ROOT$SCRIPT_PATH"
    fi
    cat >"$ROOT$MASTER_SHUTDOWN_SCRIPT" <<EOF
#!/bin/sh
# condor_master runs this instead of exiting (DEFAULT_MASTER_SHUTDOWN_SCRIPT): once HTCondor has
# stopped on an annex node, idle or otherwise, the instance has nothing left to do.
exec $SCRIPT_PATH poweroff "HTCondor master exited (idle shutdown or stop)"
EOF
    chmod 0755 "$ROOT$MASTER_SHUTDOWN_SCRIPT"
    write_timer condor-annex-watchdog "lease watchdog" watchdog
    write_timer condor-annex-deadman "dead-man (join the pool or power off)" deadman
    "${SYSTEMCTL[@]}" daemon-reload
    "${SYSTEMCTL[@]}" enable --now condor-annex-watchdog.timer condor-annex-deadman.timer
}

os_platform() {
    local id version
    id="$(sed -n 's/^ID="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release)"
    version="$(sed -n 's/^VERSION_ID="\{0,1\}\([^".]*\).*$/\1/p' /etc/os-release)"
    case "$id:$version" in
        amzn:2023) echo amzn2023 ;;
        rhel:8 | rhel:9 | rocky:8 | rocky:9 | almalinux:8 | almalinux:9 | centos:9) echo "el$version" ;;
        *) return 1 ;;
    esac
}

# HTCondor's own repository (the release RPM, as its documentation describes). Images that
# already carry HTCondor skip this.
install_htcondor() {
    if command -v condor_master >/dev/null 2>&1; then
        log "HTCondor is already installed"
        return 0
    fi
    local platform
    platform="$(os_platform)" || fail "no HTCondor install recipe for this operating system"
    log "installing HTCondor $HTCONDOR_SERIES for $platform from the HTCondor repository"
    if [[ "$platform" == el* ]]; then
        # HTCondor on Enterprise Linux needs EPEL (and CRB for some dependencies).
        dnf install -y epel-release ||
            dnf install -y "https://dl.fedoraproject.org/pub/epel/epel-release-latest-${platform#el}.noarch.rpm"
        dnf config-manager --set-enabled crb || dnf config-manager --set-enabled powertools || true
    fi
    dnf install -y \
        "https://research.cs.wisc.edu/htcondor/repo/$HTCONDOR_SERIES/htcondor-release-current.$platform.noarch.rpm"
    dnf install -y condor
    command -v condor_master >/dev/null 2>&1 || fail "HTCondor installed but condor_master not found"
}

fetch_configuration() {
    local env_name env_project
    install -d -m 0755 "$ROOT$CONFIG_DIR"
    log "fetching s3://$ANNEX_BUCKET/$(annex_key "$PROJECT_ID" "$ANNEX_NAME" '')"
    fetch_object "$(annex_key "$PROJECT_ID" "$ANNEX_NAME" "$NODE_ENV_OBJECT")" "$ROOT$ENV_COPY" 0644 ||
        fail "could not fetch the annex settings ($NODE_ENV_OBJECT)"
    env_name="$(env_value ANNEX_NAME "$ROOT$ENV_COPY")" || env_name=""
    env_project="$(env_value ANNEX_PROJECT "$ROOT$ENV_COPY")" || env_project=""
    [[ "$env_name" == "$ANNEX_NAME" && "$env_project" == "$PROJECT_ID" ]] ||
        fail "the annex settings name another annex; refusing them"
    SECURITY="$(env_value ANNEX_SECURITY "$ROOT$ENV_COPY")" || SECURITY=""

    fetch_object "$(annex_key "$PROJECT_ID" "$ANNEX_NAME" "$NODE_CONFIG_OBJECT")" \
        "$ROOT$NODE_CONFIG_PATH" 0644 || fail "could not fetch the HTCondor configuration"
    # The fragment is data: a line that makes HTCondor run a command is refused.
    if grep -Eiq '^[[:space:]]*include[[:space:]]+(ifexist[[:space:]]+)?command|\|[[:space:]]*$' \
        "$ROOT$NODE_CONFIG_PATH"; then
        rm -f "$ROOT$NODE_CONFIG_PATH"
        fail "the HTCondor configuration runs commands; refusing it"
    fi
    log "wrote $NODE_CONFIG_PATH"

    case "$SECURITY" in
        idtoken)
            install -d -m 0700 "$ROOT$TOKEN_DIR"
            fetch_object "$(annex_key "$PROJECT_ID" "$ANNEX_NAME" "$TOKEN_OBJECT")" \
                "$ROOT$TOKEN_PATH" 0600 || fail "could not fetch the annex's token"
            log "installed the annex's IDTOKEN as $TOKEN_PATH"
            ;;
        password)
            install -d -m 0700 "$ROOT$PASSWORD_DIR"
            fetch_object "$(annex_key "$PROJECT_ID" "$ANNEX_NAME" "$PASSWORD_OBJECT")" \
                "$ROOT$PASSWORD_PATH" 0600 || fail "could not fetch the pool password"
            log "installed the pool password as $PASSWORD_PATH"
            ;;
        *) fail "unknown ANNEX_SECURITY $(printable "$SECURITY") in the annex settings" ;;
    esac
}

write_instance_config() {
    cat >"$ROOT$INSTANCE_CONFIG_PATH" <<EOF
# Written at boot by the condor-annex bootstrap: this instance's own identity, advertised in
# the startd and master ads (STARTD_ATTRS in 50-condor-annex.conf names it).
EC2InstanceID = "$INSTANCE_ID"
EOF
    chmod 0644 "$ROOT$INSTANCE_CONFIG_PATH"
    log "wrote $INSTANCE_CONFIG_PATH"
}

start_condor() {
    log "starting HTCondor"
    "${SYSTEMCTL[@]}" enable condor
    # restart, not start: an image may have started HTCondor before this configuration existed.
    "${SYSTEMCTL[@]}" restart condor
}

# An instance that cannot finish its boot will never run a job: say why and stop paying for it.
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
    install -d -m 0755 "$ROOT$STATE_DIR"
    log "starting (bucket ${ANNEX_BUCKET:-unset}, region ${ANNEX_REGION:-unset})"
    check_stack_settings
    now_epoch >"$ROOT$BOOTED_AT"
    imds_token || fail "the instance metadata service did not answer"
    read_identity
    install_guardrails
    install_htcondor
    fetch_configuration
    write_instance_config
    start_condor
    log "boot complete: waiting to join the pool"
}

# --- watchdog ------------------------------------------------------------------------------------

# A re-minted token (after extend) replaces the installed one; a failed fetch keeps the old one.
refresh_token() {
    local security project annex tmp
    security="$(env_value ANNEX_SECURITY "$ROOT$ENV_COPY")" || return 0
    [[ "$security" == idtoken ]] || return 0
    project="$(env_value ANNEX_PROJECT "$ROOT$ENV_COPY")" || return 0
    annex="$(env_value ANNEX_NAME "$ROOT$ENV_COPY")" || return 0
    if [[ -z "${ANNEX_BUCKET:-}" || -z "${ANNEX_REGION:-}" ]]; then
        log "ANNEX_BUCKET or ANNEX_REGION unset; token not refreshed"
        return 0
    fi
    install -d -m 0700 "$ROOT$TOKEN_DIR"
    tmp="$ROOT$TOKEN_DIR/.condor-annex.token.new"
    if ! fetch_object "$(annex_key "$project" "$annex" "$TOKEN_OBJECT")" "$tmp" 0600; then
        log "could not fetch the annex's token; keeping the installed one"
        return 0
    fi
    if cmp -s "$tmp" "$ROOT$TOKEN_PATH"; then
        rm -f "$tmp"
        return 0
    fi
    mv -f "$tmp" "$ROOT$TOKEN_PATH"
    log "installed a new IDTOKEN for the annex"
    if command -v condor_reconfig >/dev/null 2>&1; then
        condor_reconfig >/dev/null 2>&1 || log "condor_reconfig failed; HTCondor reads the token later"
    fi
}

watchdog() {
    local now rc=0 expiry_text expiry
    now="$(now_epoch)"
    if ! imds_token; then
        log "instance metadata unreachable; lease not checked this minute"
        return 0
    fi
    imds_get "meta-data/tags/instance/$TAG_EXPIRY" || rc=$?
    case "$rc" in
        0) ;;
        2)
            power_off "the lease tag $TAG_EXPIRY is missing"
            return 0
            ;;
        *)
            log "could not read the lease tag; trying again next minute"
            return 0
            ;;
    esac
    expiry_text="$IMDS_BODY"
    if ! expiry="$(parse_expiry "$expiry_text")"; then
        power_off "the lease tag $TAG_EXPIRY is not a UTC time: $(printable "$expiry_text")"
        return 0
    fi
    if ((now >= expiry)); then
        power_off "the lease ended at $expiry_text"
        return 0
    fi
    log "lease ends at $expiry_text ($((expiry - now)) s left)"
    refresh_token
}

# --- dead-man ------------------------------------------------------------------------------------

joined_pool() {
    local out
    out="$(timeout 50 "${CONDOR_STATUS[@]}" -startd -constraint "EC2InstanceID == \"$1\"" -af Name \
        2>/dev/null)" || return 1
    [[ -n "$out" ]]
}

deadman() {
    [[ -e "$ROOT$JOINED_MARK" ]] && return 0
    local now booted_at limit instance_id
    now="$(now_epoch)"
    install -d -m 0755 "$ROOT$STATE_DIR"
    booted_at="$(cat "$ROOT$BOOTED_AT" 2>/dev/null)" || booted_at=""
    if [[ ! "$booted_at" =~ ^[0-9]+$ ]]; then
        # Boot never got as far as recording itself: count from now rather than never.
        log "no boot time recorded; counting from now"
        booted_at="$now"
        printf '%s\n' "$now" >"$ROOT$BOOTED_AT"
    fi
    limit="$(deadman_seconds)"
    instance_id="$(cat "$ROOT$INSTANCE_ID_FILE" 2>/dev/null)" || instance_id=""
    if [[ "$instance_id" =~ $INSTANCE_ID_RE ]] && joined_pool "$instance_id"; then
        printf '%s\n' "$now" >"$ROOT$JOINED_MARK"
        log "this instance's startd has joined the pool; the dead-man stands down"
        "${SYSTEMCTL[@]}" disable --now condor-annex-deadman.timer ||
            log "could not disable the dead-man timer; it will find the joined mark"
        return 0
    fi
    if ((now - booted_at >= limit)); then
        power_off "the startd has not joined the pool within $limit s of boot"
        return 0
    fi
    log "not in the pool yet; $((booted_at + limit - now)) s left before power-off"
}

main() {
    MODE="${1:-boot}"
    case "$MODE" in
        boot) boot ;;
        watchdog) watchdog ;;
        deadman) deadman ;;
        poweroff)
            shift
            power_off "${*:-requested}"
            ;;
        *)
            printf 'usage: %s [boot|watchdog|deadman|poweroff REASON]\n' "$0" >&2
            exit 2
            ;;
    esac
}

main "$@"
