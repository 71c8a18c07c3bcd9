#!/usr/bin/env bash
# Validates the container files without a Docker engine: docker-compose.yml with Debian's
# docker-compose (`config -q` resolves anchors, merges and variables and checks the schema),
# and the Dockerfile's structure (instructions, stages, COPY --from references).
source "$(dirname "$0")/lib.sh"

if ! command -v docker-compose >/dev/null; then
  say "installing docker-compose (Debian) to validate the compose file"
  as_root apt-get install -y -qq docker-compose >/dev/null
fi
(cd "$REPO" && docker-compose -f docker-compose.yml config -q)

python3 - "$REPO/Dockerfile" <<'PY'
import re, sys
KNOWN = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
         "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
text = open(sys.argv[1]).read()
lines, current = [], ""
for raw in text.splitlines():
    if not current and (raw.strip().startswith("#") or not raw.strip()):
        continue
    current += raw.rstrip("\\") + " " if raw.endswith("\\") else raw
    if not raw.endswith("\\"):
        lines.append(current.strip()); current = ""
if current:
    sys.exit("Dockerfile: a line continuation runs off the end")
stages, errors = [], []
for n, line in enumerate(lines):
    word = line.split()[0].upper()
    if word not in KNOWN:
        errors.append(f"unknown instruction {word!r}")
    if n == 0 and word not in ("FROM", "ARG"):
        errors.append("the first instruction must be FROM")
    if word == "FROM":
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*$", line, re.I)
        if not m:
            errors.append(f"malformed FROM: {line}")
        else:
            if m.group(1) in stages:
                pass
            elif ":" not in m.group(1) and "@" not in m.group(1):
                errors.append(f"base image {m.group(1)} is not pinned to a tag")
            stages.append(m.group(2))
    for ref in re.findall(r"--from=(\S+)", line):
        if ref not in stages:
            errors.append(f"COPY --from={ref} names no earlier stage")
final_stage = lines[max(i for i, l in enumerate(lines) if l.upper().startswith("FROM ")):]
users = [l.split()[1].split(":")[0] for l in final_stage if l.upper().startswith("USER ") and len(l.split()) > 1]
if not users or users[-1] in ("root", "0"):
    errors.append("the image runs as root (no USER in its final stage, or the last one is root)")
if errors:
    sys.exit("Dockerfile: " + "; ".join(errors))
print(f"Dockerfile: {len(lines)} instructions, stages {', '.join(s for s in stages if s)} - ok")
PY
