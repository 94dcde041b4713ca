#!/usr/bin/env bash
# Renders the embedded agent's prompts and the simulator's caller as raw G.711 μ-law, 8 kHz mono:
# the format Twilio's media stream carries, so they are sent as they are. The output is committed
# (relay/assets/); run this again only to change the words. Needs espeak-ng and sox (Debian).
set -euo pipefail
cd "$(dirname "$0")/../relay/assets"
render() { # voice, text, output
  local wav
  wav=$(mktemp --suffix=.wav)
  espeak-ng -v "$1" -s 150 -w "$wav" "$2"
  sox "$wav" -r 8000 -c 1 -e u-law -t raw "$3"
  rm -f "$wav"
}
mkdir -p prompts/he prompts/en caller
render he "שלום, הגעתם לסוכן הדיגיטלי. במה אפשר לעזור?" prompts/he/greeting.ulaw
render he "הבנתי, תודה. ספרו לי עוד." prompts/he/reply.ulaw
render en "Hello, you have reached the digital agent. How can I help?" prompts/en/greeting.ulaw
render en "I see, thank you. Tell me more." prompts/en/reply.ulaw
# Said while the agent reconnects to the model (a drop, a new relay): not silence.
render he "רגע אחד, אני איתך." prompts/he/hold.ulaw
render en "One moment, I am still here." prompts/en/hold.ulaw
render he "שלום, אני מחפש דירה של ארבעה חדרים בתל אביב." caller/he.ulaw
render en "Hello, I am looking for a four room apartment in Tel Aviv." caller/en.ulaw
