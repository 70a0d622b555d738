# shellcheck shell=bash
# Mail helpers for tests/interop/run.sh: mbsync pulls, a private Dovecot, smtplib.

# mbsync_pull HOST PORT USER PASS WORKDIR -> prints "<messages> <bytes>" of the local Maildir
# (all folders), pulled over plain IMAP (loopback).
mbsync_pull() {
  local host="$1" port="$2" user="$3" pass="$4" work="$5"
  rm -rf "$work"
  mkdir -p "$work/mail"
  cat >"$work/mbsyncrc" <<CONF
IMAPAccount acc
Host $host
Port $port
User $user
Pass $pass
SSLType None
AuthMechs LOGIN
PipelineDepth 50

IMAPStore far
Account acc

MaildirStore near
Path $work/mail/
Inbox $work/mail/INBOX
SubFolders Verbatim

Channel pull
Far :far:
Near :near:
Patterns *
Create Near
Sync Pull
SyncState *
CONF
  mbsync -q -c "$work/mbsyncrc" -a >"$work/mbsync.log" 2>&1 || { cat "$work/mbsync.log" >&2; return 1; }
  local n bytes
  n=$(find "$work/mail" -type f \( -path '*/cur/*' -o -path '*/new/*' \) | wc -l)
  bytes=$(find "$work/mail" -type f \( -path '*/cur/*' -o -path '*/new/*' \) -printf '%s\n' \
    | awk '{s += $1} END {print s + 0}')
  echo "$n $bytes"
}

# start_dovecot DIR PORT USER PASS MAILDIR_SOURCE -> a private Dovecot (plain IMAP on
# HOST:PORT) serving a copy of MAILDIR_SOURCE as USER's INBOX. Sets DOVECOT_PID.
start_dovecot() {
  local dir="$1" port="$2" user="$3" pass="$4" src="$5" muid mgid users_conf=""
  local dovecot
  dovecot="$(command -v dovecot || echo /usr/sbin/dovecot)"
  [ -x "$dovecot" ] || { echo "dovecot is not installed (apt-get install dovecot-imapd)" >&2; return 1; }
  if [ "$(id -u)" = 0 ]; then
    muid=1000; mgid=1000
  else
    muid="$(id -u)"; mgid="$(id -g)"
    users_conf="default_login_user = $(id -un)
default_internal_user = $(id -un)
default_internal_group = $(id -gn)"
  fi
  local home="$dir/home/$user"
  rm -rf "$dir"
  mkdir -p "$dir/run" "$dir/state" "$home"
  cp -r "$src" "$home/Maildir"
  printf '%s:{PLAIN}%s:%s:%s::%s::\n' "$user" "$pass" "$muid" "$mgid" "$home" >"$dir/users"
  chmod 644 "$dir/users"
  [ "$(id -u)" = 0 ] && chown -R "$muid:$mgid" "$home"
  cat >"$dir/dovecot.conf" <<CONF
protocols = imap
listen = $INTEROP_HOST
base_dir = $dir/run
state_dir = $dir/state
instance_name = icloud-bridge-interop-$port
log_path = $dir/dovecot.log
$users_conf
auth_failure_delay = 0
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_max_userip_connections = 1000
disable_plaintext_auth = no
auth_mechanisms = plain login
ssl = no
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $dir/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $dir/users
}
namespace inbox {
  inbox = yes
  separator = /
}
service imap-login {
  inet_listener imap {
    address = $INTEROP_HOST
    port = $port
  }
  inet_listener imaps {
    port = 0
  }
}
CONF
  "$dovecot" -F -c "$dir/dovecot.conf" >>"$dir/dovecot.log" 2>&1 &
  DOVECOT_PID=$!
  SPAWNED_PIDS+=("$DOVECOT_PID")
  SPAWNED_NAMES+=(dovecot)
  local greeting="" i
  for i in $(seq 100); do
    if { exec 3<>"/dev/tcp/$INTEROP_HOST/$port"; } 2>/dev/null; then
      read -r -t 5 greeting <&3 || true
      printf 'a LOGOUT\r\n' >&3 2>/dev/null || true
      exec 3<&- 3>&-
    fi
    case "$greeting" in "* OK"*) return 0 ;; esac
    kill -0 "$DOVECOT_PID" 2>/dev/null || break
    sleep 0.2
  done
  echo "dovecot did not start; see $dir/dovecot.log" >&2
  return 1
}

# smtp_send HOST PORT USER PASS SUBJECT: one message with smtplib (AUTH without TLS: loopback).
smtp_send() {
  python3 - "$@" <<'PY'
import smtplib, sys
host, port, user, password, subject = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
msg = (f"From: {user} <alice@icloud.com>\r\nTo: Bob <bob@example.org>\r\nSubject: {subject}\r\n"
       "\r\nHello through the bridge.\r\n.leading dot line\r\n")
with smtplib.SMTP(host, port, timeout=30) as s:
    s.ehlo("interop.local")
    s.login(user, password)
    s.sendmail("alice@icloud.com", ["bob@example.org"], msg.encode())
print("sent")
PY
}

# make_ca DIR: a throwaway CA and a server certificate for 127.0.0.1/localhost (openssl):
# DIR/ca.pem, DIR/server.pem, DIR/server.key.
make_ca() {
  local d="$1"
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=interop test CA" \
    -keyout "$d/ca.key" -out "$d/ca.pem" >/dev/null 2>&1 || return 1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$d/server.key" -out "$d/server.csr" >/dev/null 2>&1 || return 1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$d/ext.cnf"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/ext.cnf" -out "$d/server.pem" >/dev/null 2>&1
}
