#!/usr/bin/env bash
# The ten content-sync scenarios of the Viva Learning API, in order, with nothing but `vlsync`.
#
# Against the local stack:   make dev        (in another terminal)
#                            set -a; . .dev/stack.env; set +a
#                            scripts/scenarios.sh
# vlsync must be on PATH (`pip install -e .`; make puts it in .venv/bin). Every step prints what it
# did. Scenarios 1-5 create, change and delete a new learning provider; 6-10 push content into the
# stack's demo registration ($REGISTRATION_ID) and remove it again.
set -euo pipefail

if ! command -v vlsync >/dev/null 2>&1; then
  echo "vlsync is not on PATH: run 'pip install -e .' (or: export PATH=\$PWD/.venv/bin:\$PATH)" >&2
  exit 127
fi
: "${REGISTRATION_ID:?set REGISTRATION_ID (source .dev/stack.env: set -a; . .dev/stack.env; set +a)}"

step() { printf '\n== %s\n' "$*"; }
HOSTILE="O'Brien/1 + #2 100% Ünïcødé"

step "1. Register a learning provider (delegated admin token)"
NEW_ID=$(vlsync provider register \
  --display-name "Scenario LMS" \
  --square-logo-light https://lms.example.com/logo/square-light.png \
  --long-logo-light https://lms.example.com/logo/long-light.png \
  --square-logo-dark https://lms.example.com/logo/square-dark.png \
  --long-logo-dark https://lms.example.com/logo/long-dark.png \
  --login-url https://lms.example.com/login \
  --no-course-activity-sync --quiet)
echo "registered provider 'Scenario LMS': registrationId $NEW_ID"

step "2. Update the provider, then disable and enable it"
vlsync provider update "$NEW_ID" --display-name "Scenario LMS (renamed)" --course-activity-sync
# No webhook source feeds this new registration, so no worker can hold a stale enabled state:
# no need to wait out REGISTRATION_STATE_CACHE_SECONDS (--settle-seconds 0). Keep the default for
# registrations the function app serves.
vlsync provider disable "$NEW_ID" --deactivate-content --settle-seconds 0
vlsync provider enable "$NEW_ID" --reactivate-content --settle-seconds 0

step "3. Get the provider"
vlsync provider get "$NEW_ID"

step "4. List the providers"
vlsync provider list

step "5. Delete the provider"
vlsync provider delete "$NEW_ID" --yes

step "6. Upsert content into registration $REGISTRATION_ID (app-only token; recorded in the ledger)"
vlsync content upsert - --concurrency 4 <<JSON
{"externalId": "scenario-101", "title": "Safety basics", "contentWebUrl": "https://lms.example.com/courses/101", "languageTag": "en-us", "level": "beginner", "duration": "PT45M", "skillTags": ["safety"]}
{"externalId": "scenario-102", "title": "Forklift licence", "contentWebUrl": "https://lms.example.com/courses/102", "languageTag": "en-us", "format": "Course", "isPremium": true}
{"externalId": "$HOSTILE", "title": "Quotes, slashes and more", "contentWebUrl": "https://lms.example.com/courses/103", "languageTag": "fr-fr"}
JSON

step "7. List the content (every page)"
vlsync content list --select externalId,title,level,isActive

step "8. Status of scenario-101: in Graph, last push, searchable by"
vlsync content status scenario-101

step "9. Get one item by externalId"
vlsync content get "$HOSTILE"

step "10. Delete the content"
vlsync content delete scenario-101
vlsync content delete scenario-102
vlsync content delete "$HOSTILE"

printf '\nall 10 scenarios done\n'
