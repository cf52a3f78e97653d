package io.kvquant.eval.bench;

import io.kvquant.attention.DecodeAttention;
import io.kvquant.cache.KvCaches;
import io.kvquant.cache.KvQuantConfig;
import io.kvquant.cache.LayeredKvCache;
import io.kvquant.eval.Json;
import io.kvquant.eval.RunContext;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code kvq bench attention}: decode attention time per token for one layer (one new query per
 * head over the whole context), per cache, context and thread count, with bytes per token and
 * ratios against dense fp16 measured in the same run.
 */
@Command(name = "attention", mixinStandardHelpOptions = true,
        description = {"Decode-attention time per token for one layer, and bytes per token, per KV cache.",
                "Ratios are against dense fp16 at the same context, threads and head dim, in this run.",
                "read-probe rows: a plain sequential read of fp16's bytes (the memory-bandwidth bound);",
                "GB/s and %%probe: each cache's bytes read per step over its time, and that over a read of the same size.",
                "cpu×fp16 (1 thread): the same ratio in thread CPU time, steadier on a shared machine.",
                "×1thr: speed-up over 1 thread (steps of every thread count interleaved); cpu×1t: the same from CPU",
                "time (1-thread CPU time × threads ÷ process CPU time), what the threads give when each has a core."},
        footer = {"", "Example: ./kvq bench attention --contexts 1024,4096,16384,65536 --threads 1,2",
                "Quick smoke run: ./kvq bench attention --quick"})
public final class AttentionBenchCommand implements Callable<Integer> {

    @Option(names = "--caches", split = ";", description = "KV settings, ';'-separated (default: ${DEFAULT-VALUE}).",
            defaultValue = "full;fp16;turbo3.5;turbo2.5;turbo3.5,qjl=k;turbo2.5,qjl=k;kivi2;kivi4")
    String[] caches;

    @Option(names = "--contexts", split = ",", defaultValue = "1024,4096,16384,65536", description = "Context lengths (default: ${DEFAULT-VALUE}).")
    int[] contexts;

    @Option(names = "--head-dims", split = ",", defaultValue = "128,64", description = "Head dims (default: ${DEFAULT-VALUE}).")
    int[] headDims;

    @Option(names = "--q-heads", defaultValue = "32", description = "Query heads (default: ${DEFAULT-VALUE}).")
    int qHeads;

    @Option(names = "--kv-heads", defaultValue = "8", description = "KV heads (default: ${DEFAULT-VALUE}).")
    int kvHeads;

    @Option(names = "--threads", split = ",", description = "Thread counts (default: 1 and all cores).")
    int[] threads;

    @Option(names = "--repeats", defaultValue = "7", description = "Timed decode steps; median reported (default: ${DEFAULT-VALUE}).")
    int repeats;

    @Option(names = "--quick", description = "Small smoke run: contexts 256,1024, head dim 64, 3 repeats.")
    boolean quick;

    @Option(names = "--no-warmup", description = "Skip the JIT warm-up pass over every cache.")
    boolean noWarmup;

    @Option(names = "--json", description = "Print JSON to stdout instead of the table.")
    boolean json;

    @Option(names = "--out", description = "Write attention-bench.json here.")
    Path out;

    @Override
    public Integer call() throws Exception {
        if (quick) {
            contexts = new int[]{256, 1024};
            headDims = new int[]{64};
            repeats = 3;
        }
        if (threads == null) {
            int cores = Runtime.getRuntime().availableProcessors();
            threads = cores > 1 ? new int[]{1, cores} : new int[]{1};
        }
        if (qHeads < 1 || kvHeads < 1 || qHeads % kvHeads != 0) {
            throw new IllegalArgumentException("--q-heads must be a positive multiple of --kv-heads");
        }
        if (repeats < 1) {
            throw new IllegalArgumentException("--repeats must be >= 1");
        }
        for (int c : contexts) {
            if (c < 1) {
                throw new IllegalArgumentException("--contexts must be positive");
            }
        }
        List<KvQuantConfig> cfgs = new ArrayList<>();
        for (String c : caches) {
            cfgs.add(KvQuantConfig.parse(c.trim()));
        }
        java.io.PrintWriter err = new java.io.PrintWriter(System.err, true);
        // JIT warm-up of every kernel on a small context, so the first measured configurations
        // are not timed in the interpreter (results discarded)
        if (!noWarmup) {
            int savedRepeats = repeats;
            repeats = 1;
            io.kvquant.eval.Progress warm = new io.kvquant.eval.Progress(err, "warm-up", (long) headDims.length * cfgs.size());
            int warmed = 0;
            for (int d : headDims) {
                for (KvQuantConfig cfg : cfgs) {
                    warm.update(warmed++, cfg + " d=" + d);
                    // at least 5 rounds and 3 s of this thread's CPU time per cache: on a loaded machine
                    // wall time says little about how much the JIT has run, and a kernel timed before
                    // C2 compiled it is 10-100x slow
                    java.lang.management.ThreadMXBean mx = java.lang.management.ManagementFactory.getThreadMXBean();
                    long warmEnd = mx.getCurrentThreadCpuTime() + 3_000_000_000L;
                    for (int i = 0; i < 5 || mx.getCurrentThreadCpuTime() < warmEnd; i++) {
                        measure(List.of(cfg), d, Math.min(2048, Arrays.stream(contexts).min().orElse(2048)));
                    }
                }
            }
            // then rounds over every cache until one passes, and a pause after it, with the JIT
            // compiling nothing: on 2 cores C2's queue was still long after the 3 s above, and a
            // kernel left in C1 code (which boxes every vector) timed 10-40x slow (session 12)
            java.lang.management.CompilationMXBean jit = java.lang.management.ManagementFactory.getCompilationMXBean();
            if (jit != null && jit.isCompilationTimeMonitoringSupported()) {
                long quietEnd = System.nanoTime() + 30_000_000_000L;
                long before = jit.getTotalCompilationTime();
                while (System.nanoTime() < quietEnd) {
                    for (int d : headDims) {
                        for (KvQuantConfig cfg : cfgs) {
                            measure(List.of(cfg), d, Math.min(2048, Arrays.stream(contexts).min().orElse(2048)));
                        }
                    }
                    try {
                        Thread.sleep(250);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                        break;
                    }
                    long now = jit.getTotalCompilationTime();
                    if (now == before) {
                        break;
                    }
                    before = now;
                }
            }
            repeats = savedRepeats;
            warm.done();
        }
        List<Map<String, Object>> rows = new ArrayList<>();
        int total = headDims.length * contexts.length * cfgs.size();
        int done = 0;
        io.kvquant.eval.Progress bar = new io.kvquant.eval.Progress(err, "attention", total);
        for (int d : headDims) {
            for (int ctx : contexts) {
                long fp16Bytes = 0;
                long maxBytes = 0;
                bar.update(done, "d=" + d + " context=" + ctx);
                done += cfgs.size();
                List<Map<String, Object>> got = measure(cfgs, d, ctx);
                rows.addAll(got);
                for (Map<String, Object> g : got) {
                    long b = (Long) g.get("bytes_read");
                    maxBytes = Math.max(maxBytes, b);
                    if (g.get("cache").equals("fp16")) {
                        fp16Bytes = b;
                    }
                }
                long probeBytes = fp16Bytes > 0 ? fp16Bytes : maxBytes;
                // the bandwidth floor: a plain sequential read of fp16's bytes (or the largest cache's)
                for (int th : threads) {
                    double ns = probeNs(probeBytes, th);
                    Map<String, Object> row = new LinkedHashMap<>();
                    row.put("cache", "read-probe");
                    row.put("head_dim", d);
                    row.put("context", ctx);
                    row.put("threads", th);
                    row.put("ns_per_token", ns);
                    row.put("bytes_per_token", (double) probeBytes / ctx);
                    row.put("bytes_read", probeBytes);
                    row.put("achieved_bytes_per_s", probeBytes / (ns / 1e9));
                    row.put("probe_bytes_per_s", probeBytes / (ns / 1e9));
                    row.put("fraction_of_probe", 1.0);
                    rows.add(row);
                }
            }
        }
        bar.done();
        for (Map<String, Object> r : rows) {
            for (Map<String, Object> base : rows) {
                if (base.get("cache").equals("fp16") && !r.get("cache").equals("read-probe") && base.get("context").equals(r.get("context"))
                        && base.get("threads").equals(r.get("threads")) && base.get("head_dim").equals(r.get("head_dim"))) {
                    r.put("ratio_vs_fp16", (Double) r.get("ns_per_token") / (Double) base.get("ns_per_token"));
                    r.put("memory_ratio_vs_fp16", (Double) base.get("bytes_per_token") / (Double) r.get("bytes_per_token"));
                    if (r.containsKey("cpu_ns_per_token") && base.containsKey("cpu_ns_per_token")) {
                        r.put("cpu_ratio_vs_fp16", (Double) r.get("cpu_ns_per_token") / (Double) base.get("cpu_ns_per_token"));
                    }
                }
            }
        }
        // thread scaling: time on 1 thread over time on th threads (same cache, context, head dim; interleaved
        // steps), and the same from CPU time (what th threads would give if each had a core to itself)
        for (Map<String, Object> r : rows) {
            for (Map<String, Object> one : rows) {
                if (!r.get("cache").equals("read-probe") && (Integer) r.get("threads") > 1 && one.get("cache").equals(r.get("cache"))
                        && (Integer) one.get("threads") == 1 && one.get("context").equals(r.get("context"))
                        && one.get("head_dim").equals(r.get("head_dim"))) {
                    int th = (Integer) r.get("threads");
                    r.put("speedup_vs_1_thread", (Double) one.get("ns_per_token") / (Double) r.get("ns_per_token"));
                    if (one.containsKey("cpu_ns_per_token") && r.containsKey("process_cpu_ns_per_token")) {
                        r.put("cpu_speedup_vs_1_thread",
                                th * (Double) one.get("cpu_ns_per_token") / (Double) r.get("process_cpu_ns_per_token"));
                    }
                }
            }
        }
        Map<String, Object> config = new LinkedHashMap<>();
        config.put("q_heads", qHeads);
        config.put("kv_heads", kvHeads);
        config.put("repeats", repeats);
        config.put("caches", Arrays.asList(caches));
        Map<String, Object> doc = new LinkedHashMap<>();
        doc.put("run", RunContext.capture(Arrays.stream(threads).max().orElse(1), config));
        doc.put("results", rows);
        String js = Json.write(doc);
        if (json) {
            System.out.println(js);
        } else {
            System.out.printf(Locale.ROOT, "%-16s %4s %7s %3s %12s %9s %11s %9s %8s %7s %9s %7s %7s%n", "cache", "d", "context", "thr",
                    "us/token", "×fp16", "bytes/tok", "mem÷", "GB/s", "%probe", "cpu×fp16", "×1thr", "cpu×1t");
            for (Map<String, Object> r : rows) {
                System.out.printf(Locale.ROOT, "%-16s %4d %7d %3d %12.1f %9.2f %11.1f %9.2f %8.2f %6.1f%% %9.2f %7.2f %7.2f%n", r.get("cache"),
                        (Integer) r.get("head_dim"), (Integer) r.get("context"), (Integer) r.get("threads"),
                        (Double) r.get("ns_per_token") / 1000, (Double) r.getOrDefault("ratio_vs_fp16", Double.NaN),
                        (Double) r.get("bytes_per_token"), (Double) r.getOrDefault("memory_ratio_vs_fp16", Double.NaN),
                        (Double) r.get("achieved_bytes_per_s") / 1e9, 100 * (Double) r.get("fraction_of_probe"),
                        (Double) r.getOrDefault("cpu_ratio_vs_fp16", Double.NaN), (Double) r.getOrDefault("speedup_vs_1_thread", Double.NaN),
                        (Double) r.getOrDefault("cpu_speedup_vs_1_thread", Double.NaN));
            }
        }
        if (out != null) {
            RunContext.writeAtomically(out.resolve("attention-bench.json"), js + "\n");
        }
        return 0;
    }

    /**
     * Decode-step times of every cache in {@code cfgs} at one head dim and context, for every thread
     * count. The steps are interleaved over caches and thread counts (fp16 1 thread, fp16 2 threads,
     * turbo 1 thread, ...; repeated), so that the load of a shared machine changes between
     * repeats, not between the configurations a ratio compares.
     */
    private List<Map<String, Object>> measure(List<KvQuantConfig> cfgs, int d, int ctx) {
        List<Map<String, Object>> rows = new ArrayList<>();
        int nc = cfgs.size();
        int nt = threads.length;
        LayeredKvCache[] caches = new LayeredKvCache[nc];
        DecodeAttention[] atts = new DecodeAttention[nt];
        double[][][] nsAll = new double[nc][nt][repeats];
        double[][][] cpuAll = new double[nc][nt][repeats];
        float[] q = new float[qHeads * d];
        float[] o = new float[qHeads * d];
        float scale = (float) (1 / Math.sqrt(d));
        java.lang.management.ThreadMXBean mx = java.lang.management.ManagementFactory.getThreadMXBean();
        try {
            for (int ci = 0; ci < nc; ci++) {
                // the same keys, values and query for every cache
                SplittableRandom r = new SplittableRandom(ctx * 31L + d);
                caches[ci] = KvCaches.create(cfgs.get(ci), 1, kvHeads, d);
                int chunk = 1024;
                float[] k = new float[kvHeads * chunk * d];
                float[] v = new float[kvHeads * chunk * d];
                for (int t0 = 0; t0 < ctx; t0 += chunk) {
                    int n = Math.min(chunk, ctx - t0);
                    int m = kvHeads * n * d;
                    for (int i = 0; i < m; i++) {
                        // keys with a few outlier channels, as real keys have
                        k[i] = (float) (gauss(r) * ((i % d) % 32 == 5 ? 4 : 1));
                        v[i] = (float) gauss(r);
                    }
                    caches[ci].append(0, m == k.length ? k : Arrays.copyOf(k, m), m == v.length ? v : Arrays.copyOf(v, m), n);
                }
                for (int i = 0; i < q.length; i++) {
                    q[i] = (float) gauss(r);
                }
            }
            for (int ti = 0; ti < nt; ti++) {
                atts[ti] = new DecodeAttention(threads[ti]);
            }
            int warm = ctx >= 32768 ? 2 : 4;
            for (int ci = 0; ci < nc; ci++) {
                for (int ti = 0; ti < nt; ti++) {
                    for (int i = 0; i < warm; i++) {
                        atts[ti].attend(caches[ci], 0, q, qHeads, scale, o);
                    }
                }
            }
            for (int i = 0; i < repeats; i++) {
                for (int ci = 0; ci < nc; ci++) {
                    for (int ti = 0; ti < nt; ti++) {
                        boolean one = threads[ti] == 1;
                        // CPU time: this thread's on 1 thread; every thread's of the process otherwise
                        long c0 = one ? mx.getCurrentThreadCpuTime() : allThreadsCpu(mx);
                        long t0 = System.nanoTime();
                        atts[ti].attend(caches[ci], 0, q, qHeads, scale, o);
                        nsAll[ci][ti][i] = System.nanoTime() - t0;
                        cpuAll[ci][ti][i] = (one ? mx.getCurrentThreadCpuTime() : allThreadsCpu(mx)) - c0;
                    }
                }
            }
            for (int ci = 0; ci < nc; ci++) {
                LayeredKvCache cache = caches[ci];
                for (int ti = 0; ti < nt; ti++) {
                    int th = threads[ti];
                    double[] ns = nsAll[ci][ti];
                    double[] cpu = cpuAll[ci][ti];
                    Arrays.sort(ns);
                    Arrays.sort(cpu);
                    Map<String, Object> row = new LinkedHashMap<>();
                    row.put("cache", cfgs.get(ci).toString());
                    row.put("head_dim", d);
                    row.put("context", ctx);
                    row.put("threads", th);
                    row.put("ns_per_token", ns[ns.length / 2]);
                    if (th == 1) {
                        // on one thread attention runs on this thread: its CPU time is robust to a shared machine
                        row.put("cpu_ns_per_token", cpu[cpu.length / 2]);
                    } else {
                        // CPU time of every thread during the step (the workers, and the JVM's own threads)
                        row.put("process_cpu_ns_per_token", cpu[cpu.length / 2]);
                    }
                    row.put("bytes_per_token", (double) cache.bytesUsed() / ctx);
                    row.put("bits_per_element", 8.0 * cache.bytesUsed() / ((double) ctx * kvHeads * d * 2));
                    // one decode step reads every stored byte of the layer once
                    long bytes = cache.bytesUsed();
                    double probe = probeNs(bytes, th);
                    row.put("bytes_read", bytes);
                    row.put("achieved_bytes_per_s", bytes / (ns[ns.length / 2] / 1e9));
                    row.put("probe_bytes_per_s", bytes / (probe / 1e9));
                    row.put("fraction_of_probe", probe / ns[ns.length / 2]);
                    rows.add(row);
                }
            }
        } finally {
            for (DecodeAttention a : atts) {
                if (a != null) {
                    a.close();
                }
            }
            for (LayeredKvCache c : caches) {
                if (c != null) {
                    c.close();
                }
            }
        }
        return rows;
    }

    /** Σ CPU time of every live thread of this JVM (ns; exact per thread, unlike the process clock's 10 ms ticks). */
    private static long allThreadsCpu(java.lang.management.ThreadMXBean mx) {
        long s = 0;
        for (long id : mx.getAllThreadIds()) {
            long t = mx.getThreadCpuTime(id);
            if (t > 0) {
                s += t;
            }
        }
        return s;
    }

    /**
     * Median time of a plain sequential read of {@code bytes} off-heap bytes (the same amount a
     * decode step reads), split evenly over {@code th} threads: the memory-bandwidth bound.
     */
    private double probeNs(long bytes, int th) {
        try (java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofShared()) {
            java.lang.foreign.MemorySegment seg = arena.allocate(Math.max(bytes, 64), 64);
            seg.fill((byte) 1);
            io.kvquant.simd.VectorOps ops = io.kvquant.simd.Simd.ops();
            long slice = (bytes / th + 63) / 64 * 64;
            java.util.concurrent.ForkJoinPool pool = th > 1 ? new java.util.concurrent.ForkJoinPool(th) : null;
            try {
                double[] ns = new double[Math.max(repeats, 5)];
                float[] sink = new float[th];
                for (int i = -3; i < ns.length; i++) {
                    long t0 = System.nanoTime();
                    if (pool == null) {
                        sink[0] += ops.readProbe(seg, 0, bytes);
                    } else {
                        pool.submit(() -> java.util.stream.IntStream.range(0, th).parallel().forEach(k -> {
                            long from = Math.min(bytes, k * slice);
                            sink[k] += ops.readProbe(seg, from, Math.min(bytes, from + slice) - from);
                        })).get();
                    }
                    if (i >= 0) {
                        ns[i] = System.nanoTime() - t0;
                    }
                }
                Arrays.sort(ns);
                if (Float.isNaN(sink[0])) {
                    throw new IllegalStateException("probe read NaN");
                }
                return ns[ns.length / 2];
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("probe interrupted", e);
            } catch (java.util.concurrent.ExecutionException e) {
                throw new IllegalStateException(e.getCause());
            } finally {
                if (pool != null) {
                    pool.shutdown();
                }
            }
        }
    }

    private static double gauss(SplittableRandom r) {
        return Math.sqrt(-2 * Math.log(1 - r.nextDouble())) * Math.cos(2 * Math.PI * r.nextDouble());
    }
}
