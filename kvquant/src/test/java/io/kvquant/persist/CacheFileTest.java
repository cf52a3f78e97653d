package io.kvquant.persist;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.attention.DecodeAttention;
import io.kvquant.cache.KvCaches;
import io.kvquant.cache.LayeredKvCache;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class CacheFileTest {

    static final String SHA = "ab".repeat(32);
    static final String OTHER_SHA = "cd".repeat(32);
    static final int LAYERS = 3;
    static final int HEADS = 2;
    static final int DIM = 64;

    @TempDir
    Path tmp;

    /** Appends {@code tokens} seeded random tokens in chunks of 7 (so windows wrap and records span pages). */
    static void fill(LayeredKvCache c, int tokens, long seed) {
        Random r = new Random(seed);
        for (int done = 0; done < tokens; ) {
            int n = Math.min(7, tokens - done);
            for (int l = 0; l < c.layers(); l++) {
                float[] k = new float[HEADS * n * DIM];
                float[] v = new float[HEADS * n * DIM];
                for (int i = 0; i < k.length; i++) {
                    k[i] = (float) r.nextGaussian();
                    v[i] = (float) r.nextGaussian();
                }
                c.append(l, k, v, n);
            }
            done += n;
        }
    }

    static long[] ids(int n, long seed) {
        Random r = new Random(seed);
        long[] ids = new long[n];
        for (int i = 0; i < n; i++) {
            ids[i] = r.nextInt(4096);
        }
        return ids;
    }

    /** Every layer's reconstruction and raw records are bit for bit equal. */
    static void assertSameCache(LayeredKvCache a, LayeredKvCache b) {
        for (int l = 0; l < a.layers(); l++) {
            int n = a.length(l);
            assertEquals(n, b.length(l), "layer " + l + " length");
            float[] ka = new float[HEADS * n * DIM];
            float[] va = new float[HEADS * n * DIM];
            float[] kb = new float[HEADS * n * DIM];
            float[] vb = new float[HEADS * n * DIM];
            a.read(l, 0, n, ka, va);
            b.read(l, 0, n, kb, vb);
            assertArrayEquals(ka, kb, "layer " + l + " keys");
            assertArrayEquals(va, vb, "layer " + l + " values");
            int r = a.store(l).recordTokens();
            assertEquals(r, b.store(l).recordTokens());
            for (int h = 0; h < HEADS; h++) {
                for (boolean key : new boolean[] {true, false}) {
                    int rb = a.store(l).recordBytes(key);
                    try (Arena ar = Arena.ofConfined()) {
                        MemorySegment x = ar.allocate(Math.max(1, (long) r * rb));
                        MemorySegment y = ar.allocate(Math.max(1, (long) r * rb));
                        a.store(l).exportRecords(key, h, 0, r, x, 0);
                        b.store(l).exportRecords(key, h, 0, r, y, 0);
                        assertEquals(-1, x.mismatch(y), "layer " + l + " head " + h + (key ? " key" : " value") + " records");
                    }
                }
            }
        }
    }

    /** Keys with a strong constant component, in chunks large enough for centering to take a mean (center=on). */
    static void fillBiased(LayeredKvCache c, int tokens, int chunk, long seed) {
        Random r = new Random(seed);
        for (int done = 0; done < tokens; ) {
            int n = Math.min(chunk, tokens - done);
            for (int l = 0; l < c.layers(); l++) {
                float[] k = new float[HEADS * n * DIM];
                float[] v = new float[HEADS * n * DIM];
                for (int i = 0; i < k.length; i++) {
                    k[i] = (float) r.nextGaussian() + (i % DIM == 0 ? 40f : 0f);
                    v[i] = (float) r.nextGaussian();
                }
                c.append(l, k, v, n);
            }
            done += n;
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"turbo3.5", "turbo3.5,window=0", "turbo2.5,window=16"})
    void aCenteredCacheKeepsItsKeyMean(String spec) throws IOException {
        try (LayeredKvCache a = KvCaches.create(spec, LAYERS, HEADS, DIM);
             LayeredKvCache b = KvCaches.create(spec, LAYERS, HEADS, DIM)) {
            fillBiased(a, 96, 32, 5);
            assertTrue(a.keyMean(0) != null && Math.abs(a.keyMean(0)[0]) > 30, "a strong mean was taken");
            Path f = tmp.resolve("mu.kvq");
            CacheFile.write(f, a, SHA, ids(96, 2), null);
            try (CacheFile.Loaded l = CacheFile.open(f, CacheIdentity.of(SHA, b))) {
                l.restore(b);
            }
            assertArrayEquals(a.keyMean(0), b.keyMean(0), "the key mean comes back");
            assertSameCache(a, b);
            fillBiased(a, 40, 32, 6);
            fillBiased(b, 40, 32, 6);
            assertSameCache(a, b);
        }
    }

    /** Keys with a loud rotary pair (channels 0 and DIM/2 at 10x the spread) and a constant component on channel 5. */
    static void fillLoud(LayeredKvCache c, int tokens, int chunk, long seed) {
        Random r = new Random(seed);
        for (int done = 0; done < tokens; ) {
            int n = Math.min(chunk, tokens - done);
            for (int l = 0; l < c.layers(); l++) {
                float[] k = new float[HEADS * n * DIM];
                float[] v = new float[HEADS * n * DIM];
                for (int i = 0; i < k.length; i++) {
                    int j = i % DIM;
                    k[i] = (float) r.nextGaussian() * (j == 0 || j == DIM / 2 ? 10f : 1f) + (j == 5 ? 40f : 0f);
                    v[i] = (float) r.nextGaussian();
                }
                c.append(l, k, v, n);
            }
            done += n;
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"turbo3.5", "turbo3.5,window=0,kscale=on,center=off", "k4v3,kscale=0.25,boundary=1"})
    void aKeyScalingCacheKeepsItsKeyScale(String spec) throws IOException {
        try (LayeredKvCache a = KvCaches.create(spec, LAYERS, HEADS, DIM);
             LayeredKvCache b = KvCaches.create(spec, LAYERS, HEADS, DIM)) {
            fillLoud(a, 96, 32, 5);
            float[] s = a.keyScale(1); // layer 1: not a boundary layer
            assertTrue(s != null && s[0] != s[1], "a scale was taken: " + java.util.Arrays.toString(s));
            Path f = tmp.resolve("ks.kvq");
            CacheFile.write(f, a, SHA, ids(96, 2), null);
            try (CacheFile.Loaded l = CacheFile.open(f, CacheIdentity.of(SHA, b))) {
                l.restore(b);
            }
            for (int l = 0; l < LAYERS; l++) {
                assertArrayEquals(a.keyScale(l), b.keyScale(l), "the key scale of layer " + l + " comes back");
            }
            assertSameCache(a, b);
            fillLoud(a, 40, 32, 6);
            fillLoud(b, 40, 32, 6);
            assertSameCache(a, b);
            try (DecodeAttention att = new DecodeAttention(1)) {
                float[] q = new float[4 * DIM];
                for (int i = 0; i < q.length; i++) {
                    q[i] = (float) Math.sin(i);
                }
                float[] oa = new float[q.length];
                float[] ob = new float[q.length];
                att.attend(a, 1, q, 4, 0.125f, oa);
                att.attend(b, 1, q, 4, 0.125f, ob);
                assertArrayEquals(oa, ob, "attention over the restored cache (queries scaled alike)");
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"turbo3.5", "turbo3.5,window=0", "turbo3.5,window=0,center=off", "turbo2.5,window=16", "k4v3,qjl=k,boundary=1,page=16", "fp16", "full",
            "turbo3.5,rot=haar,window=5,page=8", "turbo3.5,window=6,mid=20", "turbo2.5,window=0,mid=13,page=8"})
    void roundTripIsBitIdenticalAndContinuesIdentically(String spec) throws IOException {
        try (LayeredKvCache a = KvCaches.create(spec, LAYERS, HEADS, DIM);
             LayeredKvCache b = KvCaches.create(spec, LAYERS, HEADS, DIM)) {
            fill(a, 61, 1);
            long[] ids = ids(61, 2);
            float[] logits = {1f, -2f, Float.MIN_VALUE};
            Path f = tmp.resolve("c.kvq");
            long size = CacheFile.write(f, a, SHA, ids, logits);
            assertEquals(Files.size(f), size);
            try (CacheFile.Loaded l = CacheFile.open(f, CacheIdentity.of(SHA, b))) {
                assertArrayEquals(ids, l.tokens());
                assertArrayEquals(logits, l.logits());
                l.restore(b);
            }
            assertSameCache(a, b);
            // the same new tokens appended to both: window tokens leave it and are encoded identically
            fill(a, 40, 3);
            fill(b, 40, 3);
            assertSameCache(a, b);
            try (DecodeAttention att = new DecodeAttention(1)) {
                float[] q = new float[4 * DIM];
                for (int i = 0; i < q.length; i++) {
                    q[i] = (float) Math.sin(i);
                }
                float[] oa = new float[q.length];
                float[] ob = new float[q.length];
                att.attend(a, 1, q, 4, 0.125f, oa);
                att.attend(b, 1, q, 4, 0.125f, ob);
                assertArrayEquals(oa, ob, "attention over the restored cache");
            }
        }
    }

    /** A prefix of a saved cache is the cache of that prefix: each token reads back as in the saved cache. */
    @ParameterizedTest
    @ValueSource(strings = {"turbo3.5,window=0", "turbo3.5,window=12", "turbo3.5,window=6,mid=20", "turbo3.5,window=12,mid=0", "fp16"})
    void aPrefixOfTheFileRestoresThoseTokens(String spec) throws IOException {
        try (LayeredKvCache a = KvCaches.create(spec, LAYERS, HEADS, DIM)) {
            fill(a, 50, 1);
            Path f = tmp.resolve("p.kvq");
            CacheFile.write(f, a, SHA, ids(50, 2), null);
            for (int upTo : new int[] {1, 20, 37, 44, 49}) {
                try (LayeredKvCache b = KvCaches.create(spec, LAYERS, HEADS, DIM);
                     CacheFile.Loaded l = CacheFile.open(f, CacheIdentity.of(SHA, b))) {
                    l.restore(b, upTo);
                    for (int layer = 0; layer < LAYERS; layer++) {
                        assertEquals(upTo, b.length(layer));
                        float[] ka = new float[HEADS * 50 * DIM];
                        float[] va = new float[HEADS * 50 * DIM];
                        float[] kb = new float[HEADS * upTo * DIM];
                        float[] vb = new float[HEADS * upTo * DIM];
                        a.read(layer, 0, 50, ka, va);
                        b.read(layer, 0, upTo, kb, vb);
                        for (int h = 0; h < HEADS; h++) {
                            assertArrayEquals(java.util.Arrays.copyOfRange(ka, h * 50 * DIM, (h * 50 + upTo) * DIM),
                                    java.util.Arrays.copyOfRange(kb, h * upTo * DIM, (h + 1) * upTo * DIM), spec + " " + upTo);
                            assertArrayEquals(java.util.Arrays.copyOfRange(va, h * 50 * DIM, (h * 50 + upTo) * DIM),
                                    java.util.Arrays.copyOfRange(vb, h * upTo * DIM, (h + 1) * upTo * DIM), spec + " " + upTo);
                        }
                    }
                }
            }
        }
    }

    @Test
    void storedBytesPerTokenForTurbo35AreAQuarterOfFp16OrLess() throws IOException {
        int n = 2048;
        try (LayeredKvCache a = KvCaches.create("turbo3.5,window=0", LAYERS, HEADS, DIM)) {
            fill(a, n, 5);
            long size = CacheFile.write(tmp.resolve("t.kvq"), a, SHA, ids(n, 6), new float[4096]);
            long fp16 = 2L * 2 * LAYERS * HEADS * DIM * n;
            double ratio = (double) size / fp16;
            // records: 30 bytes per 64-dim vector (28 code + 2 norm) = 0.234 of fp16's 128; ids, logits, headers on top
            assertTrue(ratio <= 0.25, "file is " + ratio + " of fp16");
            assertTrue(ratio >= 30.0 / 128, "file cannot be smaller than its records: " + ratio);
        }
    }

    private Path saved(String spec, int tokens) throws IOException {
        try (LayeredKvCache a = KvCaches.create(spec, LAYERS, HEADS, DIM)) {
            fill(a, tokens, 1);
            Path f = tmp.resolve("s-" + spec.replace(',', '_') + ".kvq");
            CacheFile.write(f, a, SHA, ids(tokens, 2), null);
            return f;
        }
    }

    private String refusal(Path f, String spec, String sha) throws IOException {
        try (LayeredKvCache b = KvCaches.create(spec, LAYERS, HEADS, DIM)) {
            CacheRefusedException e = assertThrows(CacheRefusedException.class, () -> {
                try (CacheFile.Loaded l = CacheFile.open(f, CacheIdentity.of(sha, b))) {
                    l.restore(b);
                }
            });
            assertEquals(0, b.length(0), "a refused load leaves the cache empty");
            assertTrue(!e.getMessage().contains("\n"), "one line: " + e.getMessage());
            return e.getMessage();
        }
    }

    @Test
    void truncatedFileIsRefused() throws IOException {
        Path f = saved("turbo3.5,window=0", 50);
        byte[] b = Files.readAllBytes(f);
        for (int cut : new int[] {0, 5, 13, b.length / 2, b.length - 1}) {
            Files.write(f, java.util.Arrays.copyOf(b, cut));
            String m = refusal(f, "turbo3.5,window=0", SHA);
            assertTrue(m.contains("truncated") || m.contains("corrupted"), m);
        }
    }

    @Test
    void anyCorruptedByteIsRefused() throws IOException {
        Path f = saved("turbo3.5,window=8", 50);
        byte[] b = Files.readAllBytes(f);
        Random r = new Random(7);
        for (int i = 0; i < 40; i++) {
            byte[] c = b.clone();
            int at = 12 + r.nextInt(b.length - 12);   // past the magic and version
            c[at] ^= (byte) (1 << r.nextInt(8));
            Files.write(f, c);
            String m = refusal(f, "turbo3.5,window=8", SHA);
            assertTrue(m.contains("corrupted") || m.contains("truncated"), "byte " + at + ": " + m);
        }
    }

    @Test
    void otherModelOtherConfigAndFutureVersionAreRefused() throws IOException {
        Path f = saved("turbo3.5,window=0", 20);
        assertTrue(refusal(f, "turbo3.5,window=0", OTHER_SHA).contains("different model"));
        assertTrue(refusal(f, "turbo2.5", SHA).contains("made with cache config 'turbo3.5,window=0', this run uses 'turbo2.5'"));
        assertTrue(refusal(f, "turbo3.5,seed=7", SHA).contains("cache config"));
        assertTrue(refusal(f, "turbo3.5,window=0,vrot=2", SHA).contains("cache config"), "other value rotations");
        byte[] b = Files.readAllBytes(f);
        b[8] = 3;
        Files.write(f, b);
        assertTrue(refusal(f, "turbo3.5,window=0", SHA).contains("format version 3, newer than this kvquant reads (2)"));
        Files.writeString(f, "not a cache at all, just text");
        assertTrue(refusal(f, "turbo3.5,window=0", SHA).contains("not a kvquant cache file"));
    }

    @Test
    void kiviAndUnknownExtraStateAreRefusedClearly() throws IOException {
        try (LayeredKvCache k = KvCaches.create("kivi2", LAYERS, HEADS, DIM)) {
            fill(k, 40, 1);
            CacheRefusedException e = assertThrows(CacheRefusedException.class,
                    () -> CacheFile.write(tmp.resolve("k.kvq"), k, SHA, ids(40, 2), null));
            assertTrue(e.getMessage().contains("KIVI caches cannot be saved"), e.getMessage());
            assertTrue(CacheFile.unsupported(k) != null);
        }
        ExtraState mu = new ExtraState() {
            public String tag() {
                return "TST1";
            }

            public byte[] save(LayeredKvCache cache, int layer) {
                return new byte[] {(byte) layer, 9};
            }

            public void restore(LayeredKvCache cache, int layer, byte[] state) {
                assertArrayEquals(new byte[] {(byte) layer, 9}, state);
            }
        };
        ExtraState.REGISTERED.add(mu);
        Path f;
        try {
            f = saved("turbo3.5,window=0", 10);
            try (LayeredKvCache b = KvCaches.create("turbo3.5,window=0", LAYERS, HEADS, DIM);
                 CacheFile.Loaded l = CacheFile.open(f, CacheIdentity.of(SHA, b))) {
                l.restore(b);   // the handler is registered: restored (and checked by its assertion)
                assertEquals(10, b.length(2));
            }
        } finally {
            ExtraState.REGISTERED.remove(mu);
        }
        assertTrue(refusal(f, "turbo3.5,window=0", SHA).contains("carries layer state 'TST1' that this kvquant does not know"));
        assertNull(CacheFile.unsupported(KvCaches.create("turbo3.5,window=0", 1, 1, 8)));
    }

    /**
     * A changed record with a recomputed checksum (or state the file does not hold) is caught by
     * the readback check: the restored cache must read its first token back as saved.
     */
    @Test
    void changedRecordsWithAConsistentChecksumAreCaughtByTheReadback() throws IOException {
        Path f = saved("turbo3.5,window=0", 30);
        byte[] b = Files.readAllBytes(f);
        MemorySegment seg = MemorySegment.ofArray(b);
        long pos = 12;
        while (seg.get(Le.I32, pos) != CacheFile.LAYR) {
            pos += 16 + seg.get(Le.I64, pos + 4);
        }
        long len = seg.get(Le.I64, pos + 4);
        long bodyEnd = pos + 12 + len;
        long payload = (long) HEADS * 30 * (30 + 30);   // window 0: the body ends with the records
        int first = (int) (bodyEnd - payload);        // first key record of head 0: token 0
        b[first + 3] ^= 0x21;
        seg.set(Le.I32, bodyEnd, Le.crc(seg, pos + 12, len));
        Files.write(f, b);
        String m = refusal(f, "turbo3.5,window=0", SHA);
        assertTrue(m.contains("layer 0 reads token 0 (kv head 0) back differently after loading"), m);
    }

    @Test
    void writeIsAtomicAndLeavesNoTemporaryFiles() throws IOException {
        Path f = saved("turbo3.5,window=0", 30);
        long before = Files.size(f);
        try (LayeredKvCache a = KvCaches.create("turbo3.5,window=0", LAYERS, HEADS, DIM)) {
            fill(a, 5, 1);
            // a call that fails part-way (ids do not match the cache) keeps the old file whole
            assertThrows(IllegalArgumentException.class, () -> CacheFile.write(f, a, SHA, ids(4, 2), null));
        }
        assertEquals(before, Files.size(f));
        try (var s = Files.list(tmp)) {
            assertEquals(1, s.count(), "only the cache file is left");
        }
    }
}
