package io.kvquant.persist;

import io.kvquant.cache.LayeredKvCache;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;

/**
 * A cache cut into blocks of {@code blockTokens} tokens for a shared, content-addressed store.
 * Block i holds the raw records of tokens [i·N, (i+1)·N) of every layer and is stored under a key
 * that hashes the model's SHA-256, the cache config and geometry, N and every token id up to the
 * block's end: any prompt sharing a prefix finds the same keys, and a key names one content.
 * Each block carries a CRC32C and, when a key is configured, an HMAC-SHA256 tag over its header
 * and payload; blocks failing either are refused. Format in docs/cache-format.md.
 */
public final class PrefixBlocks {

    static final byte[] MAGIC = "KVQBLOCK".getBytes(StandardCharsets.US_ASCII);
    /**
     * 3: the header carries each layer's key scale ({@code kscale}) after its key mean. 2: trimmed
     * preset records below head dim 128 (see CacheFile.VERSION). The version is in every block key,
     * so blocks of another version are not looked up.
     */
    public static final int VERSION = 3;
    public static final int DEFAULT_BLOCK_TOKENS = 256;
    private static final int TAGGED = 1;

    private final BlockStore store;
    private final CacheIdentity id;
    private final int blockTokens;
    private final BlockAuth auth;

    /** Blocks of {@code blockTokens} tokens of caches of identity {@code id} in {@code store}; {@code auth} may be null. */
    public PrefixBlocks(BlockStore store, CacheIdentity id, int blockTokens, BlockAuth auth) {
        if (blockTokens < 1 || blockTokens > 1 << 20) {
            throw new IllegalArgumentException("block size must be in [1, 1048576] tokens, got " + blockTokens);
        }
        this.store = store;
        this.id = id;
        this.blockTokens = blockTokens;
        this.auth = auth;
    }

    public int blockTokens() {
        return blockTokens;
    }

    public BlockStore store() {
        return store;
    }

    /** The keys of the full blocks of {@code ids} that end at or before {@code maxTokens}: key i covers ids[0, (i+1)·N). */
    public List<String> keys(long[] ids, int maxTokens) {
        MessageDigest md = sha256();
        md.update(("kvq-block-v" + VERSION + "\n" + id.modelSha256() + "\n" + id.config() + "\n" + id.layers() + "x"
                + id.kvHeads() + "x" + id.headDim() + "\n" + blockTokens + "\n").getBytes(StandardCharsets.UTF_8));
        byte[] prev = md.digest();
        List<String> keys = new ArrayList<>();
        int n = Math.min(maxTokens, ids.length) / blockTokens;
        byte[] buf = new byte[4];
        for (int i = 0; i < n; i++) {
            md.update(prev);
            for (int t = i * blockTokens; t < (i + 1) * blockTokens; t++) {
                int v = (int) ids[t];
                buf[0] = (byte) v;
                buf[1] = (byte) (v >>> 8);
                buf[2] = (byte) (v >>> 16);
                buf[3] = (byte) (v >>> 24);
                md.update(buf);
            }
            prev = md.digest();
            keys.add(HexFormat.of().formatHex(prev));
        }
        return keys;
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /** What {@link #save} did. */
    public record Saved(int blocks, int written, long bytesWritten) {
    }

    /**
     * Stores every full block of {@code cache} (which holds exactly the tokens {@code ids}) whose
     * tokens are all held as records or in a middle tier (not in a full-precision window) and that
     * the store does not have yet. Middle-tier tokens are stored as the records they become on
     * leaving the tier; a cache restoring the block holds them as records.
     */
    public Saved save(LayeredKvCache cache, long[] ids) throws IOException {
        int recordTokens = ids.length;
        LayerLayout[] lay = new LayerLayout[cache.layers()];
        for (int l = 0; l < cache.layers(); l++) {
            if (cache.length(l) != ids.length) {
                throw new IllegalArgumentException("layer " + l + " holds " + cache.length(l) + " tokens, expected " + ids.length);
            }
            lay[l] = LayerLayout.of(cache, l);
            recordTokens = Math.min(recordTokens, cache.store(l).blockTokens());
        }
        List<String> keys = keys(ids, recordTokens);
        int written = 0;
        long bytes = 0;
        for (int i = 0; i < keys.size(); i++) {
            if (store.contains(keys.get(i))) {
                continue;
            }
            byte[] b = encode(cache, lay, keys.get(i), i, ids);
            store.put(keys.get(i), b);
            written++;
            bytes += b.length;
        }
        return new Saved(keys.size(), written, bytes);
    }

    /** The bytes of block {@code index} of {@code cache}. */
    byte[] encode(LayeredKvCache cache, LayerLayout[] lay, String key, int index, long[] ids) {
        int n = blockTokens;
        Le.Writer h = new Le.Writer().str(key).str(id.modelSha256()).str(id.config()).i32(id.layers()).i32(id.kvHeads())
                .i32(id.headDim()).i32(index).i32(n);
        for (int t = index * n; t < (index + 1) * n; t++) {
            h.i32((int) ids[t]);
        }
        for (LayerLayout l : lay) {
            h.i32(l.kind()).i32(l.keyRecordBytes()).i32(l.valueRecordBytes()).i64(l.fingerprint());
        }
        for (int l = 0; l < lay.length; l++) {   // block 0 carries how token 0 reads back (see Readback)
            Readback.write(h, cache, l, index == 0 ? new int[] {0} : new int[0], true);
        }
        for (int l = 0; l < lay.length; l++) {
            // the key mean the records were centered with (center=on): blocks of one prefix must agree on it
            byte[] mu = KeyMeanState.toBytes(cache.keyMean(l));
            h.i32(mu == null ? -1 : mu.length);
            if (mu != null) {
                h.bytes(mu);
            }
        }
        for (int l = 0; l < lay.length; l++) {
            // and the key scale they were divided by (kscale): the same for every block of a prefix too
            byte[] ks = KeyMeanState.toBytes(cache.keyScale(l));
            h.i32(ks == null ? -1 : ks.length);
            if (ks != null) {
                h.bytes(ks);
            }
        }
        byte[] header = h.toBytes();
        long payload = 0;
        for (LayerLayout l : lay) {
            payload += l.recordsBytes(id.kvHeads(), n);
        }
        long total = 20L + header.length + payload + BlockAuth.TAG_BYTES + 4;
        if (total > Integer.MAX_VALUE - 16) {
            throw new IllegalArgumentException("a block of " + n + " tokens would be " + total + " bytes; use smaller blocks");
        }
        byte[] b = new byte[(int) total];
        MemorySegment seg = MemorySegment.ofArray(b);
        MemorySegment.copy(MAGIC, 0, seg, ValueLayout.JAVA_BYTE, 0, MAGIC.length);
        seg.set(Le.I32, 8, VERSION);
        seg.set(Le.I32, 12, auth != null ? TAGGED : 0);
        seg.set(Le.I32, 16, header.length);
        System.arraycopy(header, 0, b, 20, header.length);
        long o = 20L + header.length;
        for (int l = 0; l < lay.length; l++) {
            o += lay[l].exportRecords(cache, l, index * n, (index + 1) * n, seg, o);
        }
        if (auth != null) {
            System.arraycopy(auth.tag(b, 0, (int) o), 0, b, (int) o, BlockAuth.TAG_BYTES);
        }
        o += BlockAuth.TAG_BYTES;
        seg.set(Le.I32, o, Le.crc(seg, 0, o));
        return b;
    }

    /** What {@link #load} did: tokens restored (a multiple of the block size), blocks read, and why it stopped early. */
    public record Loaded(int tokens, int blocks, long bytesRead, String refused) {
    }

    /**
     * Restores the longest run of stored blocks that are a prefix of {@code ids} and end at or
     * before {@code maxTokens} into the empty {@code cache}. A missing block ends the run; a block
     * that fails a check ends it too, with the reason in {@link Loaded#refused()}. Store errors
     * propagate as IOException (the cache is then left empty).
     */
    public Loaded load(LayeredKvCache cache, long[] ids, int maxTokens) throws IOException {
        for (int l = 0; l < cache.layers(); l++) {
            if (cache.length(l) != 0) {
                throw new IllegalArgumentException("blocks are restored into an empty cache; layer " + l + " holds "
                        + cache.length(l) + " tokens");
            }
        }
        if (!CacheIdentity.of(id.modelSha256(), cache).equals(id)) {
            throw new IllegalArgumentException(cache + " is not of this block set's identity");
        }
        LayerLayout[] lay = new LayerLayout[cache.layers()];
        for (int l = 0; l < cache.layers(); l++) {
            lay[l] = LayerLayout.of(cache, l);
        }
        List<String> keys = keys(ids, maxTokens);
        List<byte[]> blocks = new ArrayList<>();
        List<Integer> payloadAt = new ArrayList<>();
        List<List<Readback>> probes = new ArrayList<>();
        List<byte[]> means = null;
        String refused = null;
        long bytes = 0;
        for (int i = 0; i < keys.size(); i++) {
            byte[] b = store.get(keys.get(i));
            if (b == null) {
                break;
            }
            bytes += b.length;
            try {
                List<byte[]> mu = new ArrayList<>();
                int at = check(b, keys.get(i), i, ids, lay, i == 0 ? probes : new ArrayList<>(), mu);
                if (means != null && !sameMeans(means, mu)) {
                    // made by a run that centered its keys with another mean (another first chunk):
                    // its records do not continue this prefix's
                    refused = "cache block " + i + " from " + store.describe() + " was centered with another key mean "
                            + "or scaled with another key scale; using the first " + i + " blocks";
                    break;
                }
                means = mu;
                payloadAt.add(at);
                blocks.add(b);
            } catch (CacheRefusedException e) {
                refused = e.getMessage();
                break;
            }
        }
        int nb = blocks.size();
        if (nb == 0) {
            return new Loaded(0, 0, bytes, refused);
        }
        int n = blockTokens;
        int tokens = nb * n;
        int heads = id.kvHeads();
        try (Arena arena = Arena.ofConfined()) {
            long[] offs = new long[nb];
            for (int i = 0; i < nb; i++) {
                offs[i] = payloadAt.get(i);
            }
            for (int l = 0; l < lay.length; l++) {
                int krb = lay[l].keyRecordBytes();
                int vrb = lay[l].valueRecordBytes();
                long kBytes = (long) heads * tokens * krb;
                MemorySegment all = arena.allocate(kBytes + (long) heads * tokens * vrb, 64);
                for (int i = 0; i < nb; i++) {
                    MemorySegment src = MemorySegment.ofArray(blocks.get(i));
                    long o = offs[i];
                    for (int h = 0; h < heads; h++) {
                        MemorySegment.copy(src, o, all, ((long) h * tokens + (long) i * n) * krb, (long) n * krb);
                        o += (long) n * krb;
                    }
                    for (int h = 0; h < heads; h++) {
                        MemorySegment.copy(src, o, all, kBytes + ((long) h * tokens + (long) i * n) * vrb, (long) n * vrb);
                        o += (long) n * vrb;
                    }
                    offs[i] = o;
                }
                cache.store(l).importRecords(all, 0, all, kBytes, tokens, new float[0], new float[0], 0);
                if (means.get(l) != null) {
                    cache.restoreKeyMean(l, KeyMeanState.fromBytes(means.get(l)));
                }
                if (means.get(lay.length + l) != null) {
                    cache.restoreKeyScale(l, KeyMeanState.fromBytes(means.get(lay.length + l)));
                }
            }
        } catch (IllegalArgumentException e) {
            cache.clear();
            throw new CacheRefusedException("stored blocks do not fit this cache: " + e.getMessage());
        }
        for (int l = 0; l < probes.size(); l++) {
            for (Readback p : probes.get(l)) {
                String why = p.check(cache, l);
                if (why != null) {
                    cache.clear();
                    return new Loaded(0, 0, bytes, "cache block 0 from " + store.describe() + ": " + why);
                }
            }
        }
        return new Loaded(tokens, nb, bytes, refused);
    }

    private static boolean sameMeans(List<byte[]> a, List<byte[]> b) {
        for (int l = 0; l < a.size(); l++) {
            if (!java.util.Arrays.equals(a.get(l), b.get(l))) {
                return false;
            }
        }
        return true;
    }

    /**
     * Verifies one block; returns the offset of its payload (the key means it carries go to
     * {@code means}, one per layer, then the key scales, one per layer).
     */
    int check(byte[] b, String key, int index, long[] ids, LayerLayout[] lay, List<List<Readback>> probes,
              List<byte[]> means) throws CacheRefusedException {
        String what = "cache block " + index + " (" + key.substring(0, 12) + "...) from " + store.describe();
        MemorySegment seg = MemorySegment.ofArray(b);
        if (b.length < 20 + BlockAuth.TAG_BYTES + 4) {
            throw new CacheRefusedException(what + " is truncated (" + b.length + " bytes)");
        }
        if (!java.util.Arrays.equals(b, 0, MAGIC.length, MAGIC, 0, MAGIC.length)) {
            throw new CacheRefusedException(what + " is not a kvquant block (bad magic)");
        }
        int version = seg.get(Le.I32, 8);
        if (version > VERSION) {
            throw new CacheRefusedException(what + " has format version " + version + ", newer than this kvquant reads ("
                    + VERSION + ")");
        }
        if (version < VERSION) {
            throw new CacheRefusedException(what + " has format version " + version + ", older than this kvquant reads ("
                    + VERSION + "); re-create it");
        }
        int crcAt = b.length - 4;
        if (seg.get(Le.I32, crcAt) != Le.crc(seg, 0, crcAt)) {
            throw new CacheRefusedException(what + " is truncated or corrupted (checksum mismatch)");
        }
        int tagAt = crcAt - BlockAuth.TAG_BYTES;
        boolean tagged = (seg.get(Le.I32, 12) & TAGGED) != 0;
        if (auth != null) {
            if (!tagged) {
                throw new CacheRefusedException(what + " carries no authentication tag and a cache key is set: refused");
            }
            if (!auth.verify(b, 0, tagAt, b, tagAt)) {
                throw new CacheRefusedException(what + " fails its authentication tag (altered, or written with another "
                        + "key): refused");
            }
        }
        int hl = seg.get(Le.I32, 16);
        Le.Reader r = new Le.Reader(seg, 20, Math.min(tagAt, 20L + Math.max(0, hl)), what);
        if (hl < 0 || 20L + hl > tagAt) {
            throw new CacheRefusedException(what + " is corrupted (header length " + hl + ")");
        }
        String k = r.str();
        CacheIdentity found;
        try {
            found = new CacheIdentity(r.str(), r.str(), r.i32(), r.i32(), r.i32());
        } catch (IllegalArgumentException e) {
            throw new CacheRefusedException(what + " is corrupted (bad model sha256 in its header)");
        }
        String why = id.mismatch(found);
        if (why != null) {
            throw new CacheRefusedException(what + " does not fit: " + why);
        }
        if (!k.equals(key) || r.i32() != index || r.i32() != blockTokens) {
            throw new CacheRefusedException(what + " is stored under a key it was not made for: refused");
        }
        for (int t = index * blockTokens; t < (index + 1) * blockTokens; t++) {
            if (r.i32() != (int) ids[t]) {
                throw new CacheRefusedException(what + " holds other token ids than its key names: refused");
            }
        }
        long payload = 0;
        for (int l = 0; l < lay.length; l++) {
            LayerLayout f = new LayerLayout(r.i32(), r.i32(), r.i32(), r.i64());
            String m = lay[l].mismatch(l, f);
            if (m != null) {
                throw new CacheRefusedException(what + " does not fit: " + m);
            }
            payload += lay[l].recordsBytes(id.kvHeads(), blockTokens);
        }
        for (int l = 0; l < lay.length; l++) {
            List<Readback> p = Readback.read(r, id.kvHeads(), id.headDim(), blockTokens);
            if (index != 0 && !p.isEmpty()) {
                throw new CacheRefusedException(what + " is corrupted (a readback in block " + index + ")");
            }
            probes.add(p);
        }
        for (int l = 0; l < lay.length; l++) {
            int len = r.i32();
            if (len < -1 || len > 4 * id.kvHeads() * id.headDim()) {
                throw new CacheRefusedException(what + " is corrupted (a key mean of " + len + " bytes)");
            }
            means.add(len < 0 ? null : r.bytes(len));
        }
        for (int l = 0; l < lay.length; l++) {
            int len = r.i32();
            if (len < -1 || len > 4 * id.headDim()) {
                throw new CacheRefusedException(what + " is corrupted (a key scale of " + len + " bytes)");
            }
            means.add(len < 0 ? null : r.bytes(len));
        }
        if (r.pos != 20L + hl || 20L + hl + payload != tagAt) {
            throw new CacheRefusedException(what + " is corrupted (its payload is " + (tagAt - 20L - hl) + " bytes, expected "
                    + payload + ")");
        }
        return 20 + hl;
    }
}
