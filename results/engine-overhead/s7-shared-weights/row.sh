#!/bin/bash
# usage: row.sh TAG CONTEXT "JAVA OPTS" [SNAP]
tag=$1; ctx=$2; opts=$3; snap=${4:-/tmp/s7-share/cp-a}
out=/tmp/s7-share/b-$tag-$ctx-$(date +%H%M%S)
D="-XX:+UseSerialGC -Xms16m -XX:MaxNewSize=64m"
cd /work/wt/s7-share
/usr/lib/jvm/temurin-25-jdk-amd64/bin/java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -Dai.djl.offline=true -Dkvq.home=/work/wt/s7-share $D "-Dkvq.jvm.defaults=$D" $opts -cp "$snap/classes:$snap/lib/*" io.kvquant.cli.Kvq bench generate --contexts $ctx --kv "turbo3.5" --decode-tokens 16 --out $out >/dev/null 2>$out.err
python3 - "$out" "$tag" <<'PY'
import json,sys,glob
d=json.load(open(glob.glob(sys.argv[1]+'/*.json')[0]))
for r in d['results']:
    print(sys.argv[2], r['context'], r['kv'], r.get('status'), 'rss_mib=%.0f'%(r.get('peak_rss_bytes',0)/2**20), 'dec=%s'%r.get('decode_tokens_per_s'), 'steady=%s'%r.get('decode_tokens_per_s_steady'), 'pre=%s'%r.get('prefill_tokens_per_s'), r.get('error',''))
PY
