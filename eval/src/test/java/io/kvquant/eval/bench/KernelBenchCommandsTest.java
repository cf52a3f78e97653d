package io.kvquant.eval.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** The fields of {@code kvq bench attention} and {@code kvq bench codec} (values are timings: only their presence and sign are checked). */
class KernelBenchCommandsTest {

    @SuppressWarnings("unchecked")
    private static List<Map<String, Object>> results(GenerateBenchCommandTest.Run run) {
        assertEquals(0, run.exit(), run.stderr());
        String s = run.stdout();
        Map<String, Object> doc = (Map<String, Object>) io.kvquant.demo.onnx.Json.parse(s.substring(s.indexOf('{')));
        return (List<Map<String, Object>>) doc.get("results");
    }

    private static double num(Map<String, Object> row, String key) {
        Object v = row.get(key);
        assertTrue(v instanceof Number, key + " missing in " + row);
        return ((Number) v).doubleValue();
    }

    @Test
    void attentionRowsCarryRatiosSpeedUpsAndTheReadProbe() {
        List<Map<String, Object>> rows = results(GenerateBenchCommandTest.kvq("bench", "attention", "--quick", "--no-warmup",
                "--caches", "fp16;turbo3.5", "--threads", "1,2", "--repeats", "1", "--json"));
        // 2 contexts × (2 caches + the probe) × 2 thread counts
        assertEquals(12, rows.size());
        int probes = 0;
        for (Map<String, Object> r : rows) {
            int th = ((Number) r.get("threads")).intValue();
            assertTrue(num(r, "ns_per_token") > 0 && num(r, "achieved_bytes_per_s") > 0 && num(r, "fraction_of_probe") > 0, r.toString());
            if (r.get("cache").equals("read-probe")) {
                probes++;
                continue;
            }
            if (r.get("cache").equals("fp16")) {
                assertEquals(1.0, num(r, "ratio_vs_fp16"), 0.0);
            }
            assertTrue(num(r, "ratio_vs_fp16") > 0, r.toString());
            if (th == 1) {
                assertTrue(num(r, "cpu_ns_per_token") > 0, r.toString());
            } else {
                assertTrue(num(r, "speedup_vs_1_thread") > 0, r.toString());
                double cpu = num(r, "cpu_speedup_vs_1_thread");
                assertTrue(cpu > 0 && Double.isFinite(cpu), r.toString());
            }
        }
        assertEquals(4, probes);
    }

    @Test
    void codecRowsCarryWallCpuAndExpansionThroughput() {
        List<Map<String, Object>> rows = results(GenerateBenchCommandTest.kvq("bench", "codec", "--dim", "64", "--rates", "3.5",
                "--repeats", "1", "--vectors", "64", "--no-scalar", "--json"));
        assertEquals(2, rows.size()); // mse and prod
        for (Map<String, Object> r : rows) {
            for (String k : List.of("encode_vectors_per_s", "decode_vectors_per_s", "encode_cpu_vectors_per_s",
                    "decode_cpu_vectors_per_s", "expand_vectors_per_s", "expand_cpu_vectors_per_s")) {
                assertTrue(num(r, k) > 0, k + " in " + r);
            }
        }
    }
}
