package io.kvquant.demo.store;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.cache.KvCaches;
import io.kvquant.cache.LayeredKvCache;
import io.kvquant.persist.BlockAuth;
import io.kvquant.persist.CacheIdentity;
import io.kvquant.persist.PrefixBlocks;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.zip.CRC32C;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The Redis backend against a real redis-server started for each test on a free loopback port. */
class RedisBlockStoreTest {

    static final String SHA = "ab".repeat(32);
    static final BlockAuth KEY = BlockAuth.of("a-test-key-of-enough-bytes".getBytes(StandardCharsets.UTF_8));

    @TempDir
    Path tmp;

    static LayeredKvCache filled(int tokens, long seed) {
        LayeredKvCache c = KvCaches.create("turbo3.5,window=0", 2, 2, 64);
        Random r = new Random(seed);
        for (int l = 0; l < 2; l++) {
            float[] k = new float[2 * tokens * 64];
            float[] v = new float[2 * tokens * 64];
            for (int i = 0; i < k.length; i++) {
                k[i] = (float) r.nextGaussian();
                v[i] = (float) r.nextGaussian();
            }
            c.append(l, k, v, tokens);
        }
        return c;
    }

    static long[] ids(int n) {
        long[] ids = new long[n];
        for (int i = 0; i < n; i++) {
            ids[i] = (i * 7919L) % 4096;
        }
        return ids;
    }

    @Test
    void storesReturnsAndReportsBlocks() throws Exception {
        try (RedisServer srv = RedisServer.start(tmp.resolve("r"));
             RedisBlockStore s = RedisBlockStore.connect(srv.url(), 2000)) {
            String k = "0f".repeat(32);
            assertNull(s.get(k));
            assertFalse(s.contains(k));
            byte[] b = new byte[100_000];
            new Random(1).nextBytes(b);
            s.put(k, b);
            assertTrue(s.contains(k));
            assertArrayEquals(b, s.get(k));
            assertEquals("redis://127.0.0.1:" + srv.port, s.describe());
        }
    }

    @Test
    void prefixBlocksRoundTripThroughRedisAndATamperedBlockIsRefused() throws Exception {
        try (RedisServer srv = RedisServer.start(tmp.resolve("r"));
             RedisBlockStore s = RedisBlockStore.connect(srv.url(), 2000);
             LayeredKvCache a = filled(96, 1);
             LayeredKvCache b = KvCaches.create("turbo3.5,window=0", 2, 2, 64)) {
            long[] ids = ids(96);
            PrefixBlocks pb = new PrefixBlocks(s, CacheIdentity.of(SHA, a), 32, KEY);
            assertEquals(3, pb.save(a, ids).written());
            assertEquals(64, pb.load(b, ids, 95).tokens(), "the last block would leave no token to run");
            float[] ka = new float[2 * 64 * 64];
            float[] va = new float[2 * 64 * 64];
            float[] kb = new float[2 * 64 * 64];
            float[] vb = new float[2 * 64 * 64];
            b.read(1, 0, 64, kb, vb);
            float[] ka96 = new float[2 * 96 * 64];
            float[] va96 = new float[2 * 96 * 64];
            a.read(1, 0, 96, ka96, va96);
            for (int h = 0; h < 2; h++) {
                System.arraycopy(ka96, h * 96 * 64, ka, h * 64 * 64, 64 * 64);
                System.arraycopy(va96, h * 96 * 64, va, h * 64 * 64, 64 * 64);
            }
            assertArrayEquals(ka, kb);
            assertArrayEquals(va, vb);
            // one byte changed in block 1, the tag kept and the CRC recomputed
            String key1 = pb.keys(ids, 96).get(1);
            byte[] blk = s.get(key1);
            blk[blk.length - 60] ^= 1;
            CRC32C crc = new CRC32C();
            crc.update(blk, 0, blk.length - 4);
            ByteBuffer.wrap(blk, blk.length - 4, 4).order(ByteOrder.LITTLE_ENDIAN).putInt((int) crc.getValue());
            s.put(key1, blk);
            b.clear();
            PrefixBlocks.Loaded ld = pb.load(b, ids, 95);
            assertEquals(32, ld.tokens());
            assertTrue(ld.refused().contains("fails its authentication tag") && ld.refused().contains("redis://127.0.0.1"),
                    ld.refused());
        }
    }

    /** An in-memory store that records what a save writes. */
    static final class Capture implements io.kvquant.persist.BlockStore {
        final java.util.Map<String, byte[]> m = new java.util.LinkedHashMap<>();

        public byte[] get(String key) {
            return m.get(key);
        }

        public void put(String key, byte[] block) {
            m.put(key, block);
        }

        public boolean contains(String key) {
            return m.containsKey(key);
        }

        public String describe() {
            return "memory";
        }

        public void close() {
        }
    }

    /**
     * Four writers (own connection, own cache computed from the same data) race to store the same
     * content-addressed blocks while reading them back: their bytes are identical, every read is
     * absent or one whole block, and the blocks left restore the cache exactly.
     */
    @Test
    void concurrentWritersOfTheSameBlocks() throws Exception {
        try (RedisServer srv = RedisServer.start(tmp.resolve("r"))) {
            long[] ids = ids(128);
            ExecutorService ex = Executors.newFixedThreadPool(4);
            java.util.concurrent.CyclicBarrier go = new java.util.concurrent.CyclicBarrier(4);
            List<Future<java.util.Map<String, byte[]>>> fs = new ArrayList<>();
            for (int w = 0; w < 4; w++) {
                fs.add(ex.submit(() -> {
                    Capture mine = new Capture();
                    try (RedisBlockStore s = RedisBlockStore.connect(srv.url(), 5000);
                         LayeredKvCache c = filled(128, 1)) {
                        new PrefixBlocks(mine, CacheIdentity.of(SHA, c), 32, KEY).save(c, ids);
                        go.await();
                        for (int rep = 0; rep < 20; rep++) {
                            for (var e : mine.m.entrySet()) {
                                s.put(e.getKey(), e.getValue());
                                byte[] got = s.get(e.getKey());
                                assertArrayEquals(e.getValue(), got, "a read saw a partial or different block");
                            }
                        }
                    }
                    return mine.m;
                }));
            }
            List<java.util.Map<String, byte[]>> written = new ArrayList<>();
            for (var f : fs) {
                written.add(f.get());
            }
            ex.shutdown();
            for (var m : written) {
                assertEquals(written.get(0).keySet(), m.keySet());
                for (String k : m.keySet()) {
                    assertArrayEquals(written.get(0).get(k), m.get(k), "same content, same bytes");
                }
            }
            try (RedisBlockStore s = RedisBlockStore.connect(srv.url(), 2000);
                 LayeredKvCache ref = filled(128, 1);
                 LayeredKvCache b = KvCaches.create("turbo3.5,window=0", 2, 2, 64)) {
                PrefixBlocks.Loaded ld = new PrefixBlocks(s, CacheIdentity.of(SHA, ref), 32, KEY).load(b, ids, 128);
                assertEquals(128, ld.tokens(), String.valueOf(ld.refused()));
                float[] k1 = new float[2 * 128 * 64];
                float[] v1 = new float[2 * 128 * 64];
                float[] k2 = new float[2 * 128 * 64];
                float[] v2 = new float[2 * 128 * 64];
                ref.read(0, 0, 128, k1, v1);
                b.read(0, 0, 128, k2, v2);
                assertArrayEquals(k1, k2);
                assertArrayEquals(v1, v2);
            }
        }
    }

    @Test
    void passwordsNeverAppearInMessagesOrDescriptions() throws Exception {
        String pass = "S3cret-Pass-xyz";
        try (RedisServer srv = RedisServer.start(tmp.resolve("r"), "--requirepass", pass)) {
            IOException noAuth = assertThrows(IOException.class, () -> RedisBlockStore.connect(srv.url(), 2000));
            assertTrue(noAuth.getMessage().contains("NOAUTH") || noAuth.getMessage().toLowerCase().contains("auth"),
                    noAuth.getMessage());
            String wrong = "wrong-Pass-abc";
            IOException bad = assertThrows(IOException.class,
                    () -> RedisBlockStore.connect("redis://default:" + wrong + "@127.0.0.1:" + srv.port, 2000));
            assertFalse(bad.getMessage().contains(wrong), bad.getMessage());
            assertTrue(bad.getMessage().contains("redis://default:***@127.0.0.1:" + srv.port), bad.getMessage());
            try (RedisBlockStore ok = RedisBlockStore.connect("redis://default:" + pass + "@127.0.0.1:" + srv.port, 2000);
                 RedisBlockStore ok2 = RedisBlockStore.connect("redis://:" + pass + "@127.0.0.1:" + srv.port + "/1", 2000)) {
                ok.put("ab".repeat(32), new byte[] {1});
                assertFalse(ok.describe().contains(pass), ok.describe());
                assertFalse(ok2.describe().contains(pass), ok2.describe());
                assertNull(ok2.get("ab".repeat(32)), "database 1 is another keyspace");
                // stats of a prompt cache using the store carry no password either
                Path model = Files.writeString(tmp.resolve("model.onnx"), "x");
                StringWriter log = new StringWriter();
                try (LayeredKvCache c = KvCaches.create("turbo3.5,window=0", 2, 2, 64);
                     PromptCache pc = PromptCache.open(PromptCache.Settings.store("redis://default:" + pass + "@127.0.0.1:"
                             + srv.port), model, c, new PrintWriter(log, true))) {
                    pc.restore(ids(10), 9);
                    assertFalse(pc.stats().toString().contains(pass), pc.stats().toString());
                }
                assertFalse(log.toString().contains(pass), log.toString());
            }
        }
        assertFalse(RedisBlockStore.Url.parse("rediss://u:" + pass + "@h:1").toString().contains(pass));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> RedisBlockStore.Url.parse("redis://u:" + pass + "@host:port/x"));
        assertFalse(e.getMessage().contains(pass), e.getMessage());
    }

    /** Unreachable, silent or dying servers: a warning and a normal prefill, never an exception. */
    @Test
    void unreachableSilentOrStoppedServersGiveAWarningAndNoCache() throws Exception {
        Path model = Files.writeString(tmp.resolve("model.onnx"), "x");
        int closed = RedisServer.freePort();
        StringWriter log = new StringWriter();
        try (LayeredKvCache c = KvCaches.create("turbo3.5,window=0", 2, 2, 64);
             PromptCache pc = PromptCache.open(PromptCache.Settings.store("redis://127.0.0.1:" + closed), model, c,
                     new PrintWriter(log, true))) {
            assertEquals(0, pc.restore(ids(600), 599).tokens());
            pc.afterPrefill(ids(0), null);
        }
        assertEquals(1, log.toString().lines().count(), log.toString());
        assertTrue(log.toString().contains("cache store unreachable (redis://127.0.0.1:" + closed), log.toString());

        try (ServerSocket silent = new ServerSocket(0, 5, InetAddress.getLoopbackAddress())) {
            Thread t = Thread.ofVirtual().start(() -> {
                try (Socket s = silent.accept()) {
                    Thread.sleep(5000);
                } catch (Exception e) {
                    // the test is over
                }
            });
            long t0 = System.nanoTime();
            IOException e = assertThrows(IOException.class,
                    () -> RedisBlockStore.connect("redis://127.0.0.1:" + silent.getLocalPort(), 300));
            assertTrue((System.nanoTime() - t0) / 1e9 < 4, "the timeout applies");
            assertTrue(e.getMessage().toLowerCase().contains("timed out"), e.getMessage());
            t.interrupt();
        }

        StringWriter log2 = new StringWriter();
        RedisServer srv = RedisServer.start(tmp.resolve("r"));
        try (LayeredKvCache c = filled(64, 1);
             LayeredKvCache d = KvCaches.create("turbo3.5,window=0", 2, 2, 64);
             PromptCache pc = PromptCache.open(new PromptCache.Settings(null, false, null, srv.url(), 16, 0, null, 1000), model, d,
                     new PrintWriter(log2, true))) {
            srv.close();   // the server goes away after the connection was made
            assertEquals(0, pc.restore(ids(64), 63).tokens());
            assertEquals(0, d.length(0));
        }
        assertTrue(log2.toString().contains("failed") && log2.toString().contains("prefilling normally"), log2.toString());
    }
}
