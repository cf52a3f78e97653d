#!/bin/bash
# usage: gen.sh TAG "JAVA OPTS" [SNAP] : bundled model, long prompt, turbo3.5, 200 tokens
tag=$1; opts=$2; snap=${3:-/tmp/s7-share/cp-a}
D="-XX:+UseSerialGC -Xms16m -XX:MaxNewSize=64m"
cd /work/wt/s7-share
st=/tmp/s7-share/g-$tag-$(date +%H%M%S).json
/usr/lib/jvm/temurin-25-jdk-amd64/bin/java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -Dai.djl.offline=true -Dkvq.home=/work/wt/s7-share $D $opts -cp "$snap/classes:$snap/lib/*" io.kvquant.cli.Kvq generate --prompt-file models/prompts/long.txt --kv turbo3.5 --max-new-tokens 200 --stats-json $st >/dev/null 2>$st.err
grep "kvquant:" $st.err
python3 -c "
import json,sys;d=json.load(open('$st'))
print('$tag', d.get('mode'), 'prompt', d.get('prompt_tokens'), 'rss_mib=%.1f'%(d['peak_rss_bytes']/2**20), 'dec=%s'%d.get('decode_tokens_per_s'), 'steady=%s'%d.get('decode_tokens_per_s_steady'), 'pre=%s'%d.get('prefill_tokens_per_s'), 'gen', d.get('generated_tokens', d.get('decode_steps')))"
