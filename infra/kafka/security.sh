# shellcheck shell=bash
# SASL_SSL for the local Kafka (`start.sh --sasl-ssl`), sourced by lib.sh: a CA and a broker
# certificate, SCRAM-SHA-512 users created at storage format time, broker settings with the
# StandardAuthorizer, and the per-service ACLs of acls.conf (applied with kafka-acls).
#
# Everything it makes lives in $KAFKA_SECURITY_DIR (.run/kafka-sasl-ssl/security), made once
# and kept across restarts:
#   ca.pem                   the CA clients trust (FLYWHEEL_<SVC>_KAFKA__SSL_CAFILE)
#   ca.key, broker.pem       the CA's key; the brokers' PEM keystore (key and certificate)
#   passwords/<user>         the SCRAM password of each user (admin, the services, cli)
#   admin.properties         client config of the super user, for tool.sh --command-config
#   services.env             FLYWHEEL_<SVC>_KAFKA__* lines of every service and the CLI
# Passwords are random; delete the folder (stop.sh --sasl-ssl --clean) to make new ones.
#
# Listeners: clients and the brokers among themselves share the one SASL_SSL listener (the
# brokers authenticate as `admin` with SCRAM): replication gets the same TLS and
# authentication as client traffic, and no second data port exists that would need its own
# protection. The KRaft controller listener stays PLAINTEXT on 127.0.0.1; brokers reach the
# controllers there as User:ANONYMOUS, which must therefore be a super user. That is safe only
# because the port is loopback: a deployment across hosts puts the controller listener on
# SASL_SSL too (with PLAIN, as SCRAM credentials live in the metadata the controllers serve).

KAFKA_USERS=(admin registry deployer gateway drift retrain cli)

kafka_password() { cat "$KAFKA_SECURITY_DIR/passwords/$1"; }

# Makes the CA, the broker certificate (valid for 127.0.0.1 and localhost) and a password per
# user, unless they exist; writes the client files for mode <mode>'s brokers.
kafka_security_material() {
  local dir=$KAFKA_SECURITY_DIR user
  mkdir -p "$dir/passwords"
  chmod 700 "$dir"
  if [[ ! -s "$dir/ca.pem" ]]; then
    kafka_log "making a local CA and the broker certificate in $dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=Flywheel local Kafka CA" \
      -keyout "$dir/ca.key" -out "$dir/ca.pem.tmp" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$dir/broker.key" -out "$dir/broker.csr" 2>/dev/null
    openssl x509 -req -in "$dir/broker.csr" -CA "$dir/ca.pem.tmp" -CAkey "$dir/ca.key" \
      -CAcreateserial -days 825 -out "$dir/broker.crt" \
      -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n') \
      2>/dev/null
    # Kafka's PEM keystore: the PKCS#8 key, then the certificate chain.
    openssl pkcs8 -topk8 -nocrypt -in "$dir/broker.key" -out "$dir/broker.pem"
    cat "$dir/broker.crt" "$dir/ca.pem.tmp" >>"$dir/broker.pem"
    rm -f "$dir/broker.key" "$dir/broker.csr" "$dir/broker.crt" "$dir/ca.srl"
    chmod 600 "$dir/ca.key" "$dir/broker.pem"
    mv "$dir/ca.pem.tmp" "$dir/ca.pem"
  fi
  for user in "${KAFKA_USERS[@]}"; do
    if [[ ! -s "$dir/passwords/$user" ]]; then
      (umask 077 && openssl rand -hex 24 >"$dir/passwords/$user")
    fi
  done
  kafka_write_client_files "$1"
}

kafka_write_client_files() {
  local dir=$KAFKA_SECURITY_DIR user prefix bootstrap
  bootstrap=$(kafka_bootstrap "$1")
  (
    umask 077
    cat >"$dir/admin.properties" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(kafka_password admin)";
ssl.truststore.type=PEM
ssl.truststore.location=$dir/ca.pem
EOF
    {
      echo "# Kafka over SASL_SSL for Flywheel's services and CLI (infra/kafka/start.sh --sasl-ssl)."
      for user in registry deployer gateway drift retrain cli; do
        if [[ $user == cli ]]; then
          prefix=FLYWHEEL_CLI_KAFKA_AUTH__
          echo "FLYWHEEL_CLI_KAFKA=$bootstrap"
        else
          prefix=FLYWHEEL_${user^^}_KAFKA__
          echo "${prefix}BOOTSTRAP_SERVERS=$bootstrap"
        fi
        echo "${prefix}SECURITY_PROTOCOL=SASL_SSL"
        echo "${prefix}SASL_MECHANISM=SCRAM-SHA-512"
        echo "${prefix}SASL_USERNAME=$user"
        echo "${prefix}SASL_PASSWORD=$(kafka_password "$user")"
        echo "${prefix}SSL_CAFILE=$dir/ca.pem"
      done
    } >"$dir/services.env"
  )
}

# The format tool's arguments that create every user's SCRAM-SHA-512 credential.
kafka_scram_format_args() {
  local user
  for user in "${KAFKA_USERS[@]}"; do
    printf '%s\n' --add-scram "SCRAM-SHA-512=[name=$user,password=$(kafka_password "$user")]"
  done
}

# server.properties lines of node <id> for SASL_SSL.
kafka_security_config() {
  local id=$1 dir=$KAFKA_SECURITY_DIR user plain_users=""
  for user in "${KAFKA_USERS[@]}"; do
    plain_users+=" user_$user=\"$(kafka_password "$user")\""
  done
  cat <<EOF
# Clients and the brokers among themselves: SASL_SSL. The controller listener stays
# PLAINTEXT on loopback (brokers reach the KRaft quorum there as User:ANONYMOUS, which is why
# ANONYMOUS is a super user: only a local process can reach that port).
listeners=SASL_SSL://$KAFKA_HOST:$(kafka_broker_port "$id"),CONTROLLER://$KAFKA_HOST:$(kafka_controller_port "$id")
advertised.listeners=SASL_SSL://$KAFKA_HOST:$(kafka_broker_port "$id")
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
controller.listener.names=CONTROLLER
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(kafka_password admin)";
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$(kafka_password admin)"$plain_users;
ssl.keystore.type=PEM
ssl.keystore.location=$dir/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$dir/ca.pem
ssl.client.auth=none

# Authorization: nothing is allowed unless acls.conf grants it.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:ANONYMOUS
allow.everyone.if.no.acl.found=false
EOF
}

# Grants acls.conf's ACLs as the super user, unless this cluster has them already (the
# marker holds the checksum of the acls.conf that was applied). One kafka-acls run per line,
# a few at a time: each is a JVM of its own, and one after the other they take over a minute.
kafka_apply_acls() {
  local mode=$1 marker sum line=0 running=0 failed=0 start users operations resource pattern
  local names
  marker=$(kafka_mode_dir "$mode")/acls.applied
  sum=$(sha256sum "$KAFKA_INFRA_DIR/acls.conf" | cut -d' ' -f1)
  [[ -f "$marker" && "$(<"$marker")" == "$sum" ]] && return 0
  kafka_log "granting the ACLs of acls.conf"
  start=$SECONDS
  mkdir -p "$KAFKA_RUN_DIR/acls"
  while read -r users operations resource pattern names; do
    line=$((line + 1))
    [[ -z "$users" || "$users" == \#* ]] && continue
    if ((running >= 4)); then
      wait -n || failed=1
      running=$((running - 1))
    fi
    kafka_grant "$mode" "$users" "$operations" "$resource" "$pattern" "$names" \
      >"$KAFKA_RUN_DIR/acls/line-$line.log" 2>&1 &
    running=$((running + 1))
  done <"$KAFKA_INFRA_DIR/acls.conf"
  while ((running > 0)); do
    wait -n || failed=1
    running=$((running - 1))
  done
  if ((failed)); then
    cat "$KAFKA_RUN_DIR"/acls/line-*.log >&2
    kafka_log "error: kafka-acls failed (output above; acls.conf lines in the file names)"
    return 1
  fi
  echo "$sum" >"$marker"
  kafka_log "ACLs granted in $((SECONDS - start))s"
}

# One line of acls.conf: kafka-acls --add for every user x operation x resource name.
kafka_grant() {
  local mode=$1 users=$2 operations=$3 resource=$4 pattern=$5 names=$6 args list item
  args=(--bootstrap-server "$(kafka_bootstrap "$mode")"
    --command-config "$KAFKA_SECURITY_DIR/admin.properties"
    --add --force --resource-pattern-type "$pattern")
  IFS=, read -ra list <<<"$users"
  for item in "${list[@]}"; do args+=(--allow-principal "User:$item"); done
  IFS=, read -ra list <<<"$operations"
  for item in "${list[@]}"; do args+=(--operation "$item"); done
  IFS=, read -ra list <<<"$names"
  for item in "${list[@]}"; do args+=("--$resource" "$item"); done
  kafka_run_tool org.apache.kafka.tools.AclCommand "${args[@]}" 8>&-
}
