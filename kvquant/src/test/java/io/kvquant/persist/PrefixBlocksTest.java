package io.kvquant.persist;

import static io.kvquant.persist.CacheFileTest.DIM;
import static io.kvquant.persist.CacheFileTest.HEADS;
import static io.kvquant.persist.CacheFileTest.LAYERS;
import static io.kvquant.persist.CacheFileTest.SHA;
import static io.kvquant.persist.CacheFileTest.fill;
import static io.kvquant.persist.CacheFileTest.ids;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.KvCaches;
import io.kvquant.cache.LayeredKvCache;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class PrefixBlocksTest {

    static final BlockAuth KEY = BlockAuth.of("0123456789abcdef-test-key".getBytes(StandardCharsets.UTF_8));
    static final int N = 16;

    @TempDir
    Path tmp;

    static PrefixBlocks blocks(BlockStore s, LayeredKvCache c, BlockAuth auth) {
        return new PrefixBlocks(s, CacheIdentity.of(SHA, c), N, auth);
    }

    /** Keys are a function of everything up to the block's end: a shared prefix gives shared keys, a change later does not. */
    @Test
    void keysHashTheWholePrefix() throws IOException {
        try (LayeredKvCache c = KvCaches.create("turbo3.5,window=0", LAYERS, HEADS, DIM);
             DirectoryBlockStore s = new DirectoryBlockStore(tmp, 0)) {
            PrefixBlocks pb = blocks(s, c, null);
            long[] a = ids(100, 1);
            long[] b = a.clone();
            b[40] ^= 1;   // differs in block 2
            List<String> ka = pb.keys(a, 100);
            List<String> kb = pb.keys(b, 100);
            assertEquals(6, ka.size());
            assertEquals(ka.subList(0, 2), kb.subList(0, 2));
            for (int i = 2; i < 6; i++) {
                assertTrue(!ka.get(i).equals(kb.get(i)), "block " + i);
            }
            PrefixBlocks other = new PrefixBlocks(s, new CacheIdentity(SHA, "turbo2.5", LAYERS, HEADS, DIM), N, null);
            assertTrue(!other.keys(a, 100).get(0).equals(ka.get(0)), "config is part of the key");
        }
    }

    /** Blocks of a stored prompt restore records bit for bit; a longer prompt with the same start reuses them. */
    @Test
    void longestStoredPrefixIsRestoredBitIdentically() throws IOException {
        try (LayeredKvCache a = KvCaches.create("turbo3.5,boundary=1,window=0", LAYERS, HEADS, DIM);
             LayeredKvCache b = KvCaches.create("turbo3.5,boundary=1,window=0", LAYERS, HEADS, DIM);
             LayeredKvCache ref = KvCaches.create("turbo3.5,boundary=1,window=0", LAYERS, HEADS, DIM);
             DirectoryBlockStore s = new DirectoryBlockStore(tmp, 0)) {
            fill(a, 70, 1);
            long[] ids = ids(70, 2);
            PrefixBlocks.Saved sv = blocks(s, a, KEY).save(a, ids);
            assertEquals(4, sv.blocks());
            assertEquals(4, sv.written());
            assertEquals(0, blocks(s, a, KEY).save(a, ids).written(), "blocks already stored are not written again");
            long[] longer = java.util.Arrays.copyOf(ids, 120);
            PrefixBlocks.Loaded ld = blocks(s, b, KEY).load(b, longer, 119);
            assertEquals(64, ld.tokens());
            assertNull(ld.refused());
            // the reference: the first 64 tokens of the same data
            fill(ref, 70, 1);
            for (int l = 0; l < LAYERS; l++) {
                int n = 64;
                float[] k1 = new float[HEADS * n * DIM];
                float[] v1 = new float[HEADS * n * DIM];
                float[] k2 = new float[HEADS * n * DIM];
                float[] v2 = new float[HEADS * n * DIM];
                ref.read(l, 0, n, k1, v1);
                b.read(l, 0, n, k2, v2);
                assertArrayEquals(k1, k2);
                assertArrayEquals(v1, v2);
            }
            // a prompt that leaves the stored prefix in block 1 reuses block 0 only
            long[] diverging = ids.clone();
            diverging[20] ^= 3;
            b.clear();
            assertEquals(16, blocks(s, b, KEY).load(b, diverging, 70).tokens());
        }
    }

    /** A key-scaling cache's blocks carry its key scale (format version 3): the restored prefix continues exactly. */
    @Test
    void blocksCarryTheKeyScale() throws IOException {
        String spec = "turbo3.5,window=0";
        try (LayeredKvCache a = KvCaches.create(spec, LAYERS, HEADS, DIM);
             LayeredKvCache b = KvCaches.create(spec, LAYERS, HEADS, DIM);
             DirectoryBlockStore s = new DirectoryBlockStore(tmp, 0)) {
            CacheFileTest.fillLoud(a, 64, 32, 7);
            long[] ids = ids(64, 2);
            blocks(s, a, KEY).save(a, ids);
            PrefixBlocks.Loaded ld = blocks(s, b, KEY).load(b, ids, 64);
            assertEquals(64, ld.tokens());
            assertNull(ld.refused());
            for (int l = 0; l < LAYERS; l++) {
                assertNotNull(a.keyScale(l));
                assertArrayEquals(a.keyScale(l), b.keyScale(l), "layer " + l);
            }
            CacheFileTest.assertSameCache(a, b);
            CacheFileTest.fillLoud(a, 20, 32, 8);
            CacheFileTest.fillLoud(b, 20, 32, 8);
            CacheFileTest.assertSameCache(a, b);
        }
    }

    /**
     * With a window, tokens still in it at save time are not stored; restored records stay records
     * and read back as saved. Tokens in a middle tier at save time (38-49 with mid=20) are stored as
     * the records they become on leaving it: the saving cache holds the same once they have left.
     */
    @ParameterizedTest
    @ValueSource(strings = {"turbo3.5,window=20,mid=0", "turbo3.5,window=12,mid=20"})
    void windowedConfigStoresOnlyEncodedTokens(String spec) throws IOException {
        try (LayeredKvCache a = KvCaches.create(spec, LAYERS, HEADS, DIM);
             LayeredKvCache b = KvCaches.create(spec, LAYERS, HEADS, DIM);
             DirectoryBlockStore s = new DirectoryBlockStore(tmp, 0)) {
            fill(a, 70, 1);
            long[] ids = ids(70, 2);
            assertEquals(3, blocks(s, a, null).save(a, ids).blocks(), "50 encoded tokens: 3 full blocks");
            assertEquals(48, blocks(s, b, null).load(b, ids, 69).tokens());
            assertEquals(48, b.store(0).recordTokens(), "restored records stay records (none decoded into the window)");
            float[] k = new float[HEADS * 48 * DIM];
            float[] v = new float[HEADS * 48 * DIM];
            float[] ka = new float[HEADS * 48 * DIM];
            float[] va = new float[HEADS * 48 * DIM];
            b.read(0, 0, 48, k, v);
            fill(a, 40, 3); // every token of the blocks leaves the tier, if it was there
            a.read(0, 0, 48, ka, va);
            assertArrayEquals(ka, k, "dequantized values equal the stored records' decoding");
            assertArrayEquals(va, v, "values too");
        }
    }

    private static byte[] fixCrc(byte[] b) {
        MemorySegment seg = MemorySegment.ofArray(b);
        seg.set(Le.I32, b.length - 4, Le.crc(seg, 0, b.length - 4));
        return b;
    }

    @Test
    void tamperedBlockWithItsTagKeptIsRefusedWhenAKeyIsSet() throws IOException {
        try (LayeredKvCache a = KvCaches.create("turbo3.5,window=0", LAYERS, HEADS, DIM);
             LayeredKvCache b = KvCaches.create("turbo3.5,window=0", LAYERS, HEADS, DIM);
             DirectoryBlockStore s = new DirectoryBlockStore(tmp, 0)) {
            fill(a, 48, 1);
            long[] ids = ids(48, 2);
            blocks(s, a, KEY).save(a, ids);
            List<String> keys = blocks(s, a, KEY).keys(ids, 48);
            byte[] orig = s.get(keys.get(1));
            // one payload byte changed, tag kept, CRC recomputed (as an attacker would)
            byte[] bad = orig.clone();
            bad[bad.length - 100] ^= 0x10;
            s.put(keys.get(1), fixCrc(bad));
            PrefixBlocks.Loaded ld = blocks(s, b, KEY).load(b, ids, 47);
            assertEquals(16, ld.tokens(), "block 0 is used, the run stops at the tampered block");
            assertTrue(ld.refused().contains("fails its authentication tag"), ld.refused());
            assertTrue(ld.refused().startsWith("cache block 1 ("), ld.refused());
            // without the CRC fixed, the checksum catches it first
            bad = orig.clone();
            bad[bad.length - 100] ^= 0x10;
            s.put(keys.get(1), bad);
            b.clear();
            assertTrue(blocks(s, b, KEY).load(b, ids, 47).refused().contains("checksum mismatch"));
            // a block written without a key is refused when a key is set; another key's tag is refused
            s.put(keys.get(1), orig);
            b.clear();
            blocks(new DirectoryBlockStore(tmp.resolve("u"), 0), a, null).save(a, ids);
            DirectoryBlockStore u = new DirectoryBlockStore(tmp.resolve("u"), 0);
            assertTrue(blocks(u, b, KEY).load(b, ids, 47).refused().contains("carries no authentication tag"));
            b.clear();
            BlockAuth other = BlockAuth.of("another-key-of-16-bytes".getBytes(StandardCharsets.UTF_8));
            assertTrue(blocks(s, b, other).load(b, ids, 47).refused().contains("fails its authentication tag"));
            b.clear();
            assertEquals(32, blocks(s, b, KEY).load(b, ids, 47).tokens(), "the intact block is accepted again");
        }
    }

    /** Without a key, a block 0 whose first record was changed and whose CRC was recomputed is caught by the readback. */
    @Test
    void changedFirstRecordIsCaughtByTheReadbackWithoutAKey() throws IOException {
        try (LayeredKvCache a = KvCaches.create("turbo3.5,window=0", LAYERS, HEADS, DIM);
             LayeredKvCache b = KvCaches.create("turbo3.5,window=0", LAYERS, HEADS, DIM);
             DirectoryBlockStore s = new DirectoryBlockStore(tmp, 0)) {
            fill(a, 32, 1);
            long[] ids = ids(32, 2);
            PrefixBlocks pb = blocks(s, a, null);
            pb.save(a, ids);
            String k0 = pb.keys(ids, 32).get(0);
            byte[] blk = s.get(k0);
            int payload = blk.length - 4 - BlockAuth.TAG_BYTES - LAYERS * HEADS * N * 60;
            blk[payload + 5] ^= 0x44;     // layer 0, head 0, key record of token 0
            s.put(k0, fixCrc(blk));
            PrefixBlocks.Loaded ld = pb.load(b, ids, 32);
            assertEquals(0, ld.tokens());
            assertEquals(0, b.length(0), "the cache is left empty");
            assertTrue(ld.refused().contains("reads token 0 (kv head 0) back differently"), ld.refused());
        }
    }

    /** A block moved under another key, truncated, or from a future format is refused with its reason. */
    @Test
    void misplacedTruncatedAndFutureBlocksAreRefused() throws IOException {
        try (LayeredKvCache a = KvCaches.create("turbo3.5,window=0", LAYERS, HEADS, DIM);
             LayeredKvCache b = KvCaches.create("turbo3.5,window=0", LAYERS, HEADS, DIM);
             DirectoryBlockStore s = new DirectoryBlockStore(tmp, 0)) {
            fill(a, 32, 1);
            long[] ids = ids(32, 2);
            PrefixBlocks pb = blocks(s, a, null);
            pb.save(a, ids);
            List<String> keys = pb.keys(ids, 32);
            byte[] b0 = s.get(keys.get(0));
            byte[] b1 = s.get(keys.get(1));
            s.put(keys.get(0), b1);
            assertTrue(blocks(s, b, null).load(b, ids, 32).refused().contains("stored under a key it was not made for"));
            s.put(keys.get(0), java.util.Arrays.copyOf(b0, b0.length / 2));
            assertTrue(blocks(s, b, null).load(b, ids, 32).refused().contains("checksum mismatch"));
            byte[] fut = b0.clone();
            fut[8] = 9;
            s.put(keys.get(0), fut);
            assertTrue(blocks(s, b, null).load(b, ids, 32).refused().contains("format version 9, newer"));
            assertEquals(0, b.length(0));
        }
    }

    /** Writers of the same content-addressed block race; every read sees one whole, valid block. */
    @Test
    void concurrentWritersOfTheSameBlockLeaveOneValidBlock() throws Exception {
        try (LayeredKvCache a = KvCaches.create("turbo3.5,window=0", LAYERS, HEADS, DIM);
             DirectoryBlockStore s = new DirectoryBlockStore(tmp, 0)) {
            fill(a, 64, 1);
            long[] ids = ids(64, 2);
            PrefixBlocks pb = blocks(s, a, KEY);
            List<String> keys = pb.keys(ids, 64);
            LayerLayout[] lay = new LayerLayout[LAYERS];
            for (int l = 0; l < LAYERS; l++) {
                lay[l] = LayerLayout.of(a, l);
            }
            byte[][] encoded = new byte[4][];
            for (int i = 0; i < 4; i++) {
                encoded[i] = pb.encode(a, lay, keys.get(i), i, ids);
            }
            ExecutorService ex = Executors.newFixedThreadPool(4);
            try {
                List<Future<?>> fs = new ArrayList<>();
                for (int w = 0; w < 4; w++) {
                    fs.add(ex.submit(() -> {
                        for (int rep = 0; rep < 25; rep++) {
                            for (int i = 0; i < 4; i++) {
                                s.put(keys.get(i), encoded[i]);
                                byte[] got = s.get(keys.get(i));
                                assertNotNull(got);
                                assertArrayEquals(encoded[i], got, "a reader saw a partial or foreign block");
                            }
                        }
                        return null;
                    }));
                }
                for (Future<?> f : fs) {
                    f.get();
                }
            } finally {
                ex.shutdown();
            }
            try (LayeredKvCache b = KvCaches.create("turbo3.5,window=0", LAYERS, HEADS, DIM)) {
                PrefixBlocks.Loaded ld = pb.load(b, ids, 64);
                assertEquals(64, ld.tokens());
                CacheFileTest.assertSameCache(a, b);
            }
            try (var st = Files.list(tmp)) {
                assertEquals(4, st.count(), "no temporary files left");
            }
        }
    }

    @Test
    void directoryStoreEvictsLeastRecentlyUsedBeyondItsCap() throws IOException {
        DirectoryBlockStore s = new DirectoryBlockStore(tmp, 3000);
        String[] k = new String[4];
        for (int i = 0; i < 4; i++) {
            k[i] = String.format("%064x", i + 1);
        }
        s.put(k[0], new byte[1000]);
        s.put(k[1], new byte[1000]);
        s.put(k[2], new byte[1000]);
        Files.setLastModifiedTime(tmp.resolve(k[0] + ".kvqb"), java.nio.file.attribute.FileTime.fromMillis(1000));
        Files.setLastModifiedTime(tmp.resolve(k[1] + ".kvqb"), java.nio.file.attribute.FileTime.fromMillis(2000));
        Files.setLastModifiedTime(tmp.resolve(k[2] + ".kvqb"), java.nio.file.attribute.FileTime.fromMillis(3000));
        assertNotNull(s.get(k[0]));   // touched: now the most recently used
        s.put(k[3], new byte[1000]);  // 4000 > 3000: the least recently used (k1) goes
        assertTrue(s.contains(k[0]));
        assertTrue(!s.contains(k[1]));
        assertTrue(s.contains(k[2]) && s.contains(k[3]));
        assertEquals(3000, s.bytesHeld());
    }
}
