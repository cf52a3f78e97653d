package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

/** Locates the bundled model for tests: {@code <repo root>/models/kvq-llama}, walking up from the working dir. */
final class TestModel {
    private TestModel() {
    }

    /** The bundled model directory; fails (never skips) when it is missing. */
    static Path dir() {
        return dir("kvq-llama");
    }

    /** models/{name} of the repository; fails (never skips) when it is missing. */
    static Path dir(String name) {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            Path d = p.resolve("models").resolve(name);
            if (Files.isRegularFile(d.resolve("model.onnx"))) {
                return d;
            }
        }
        return fail("the bundled model models/" + name + "/model.onnx was not found above "
                + Path.of("").toAbsolutePath() + "; these tests need it (it is committed in the main branch)");
    }

    static Map<String, Object> golden() throws IOException {
        return golden(dir());
    }

    @SuppressWarnings("unchecked")
    static Map<String, Object> golden(Path modelDir) throws IOException {
        Path g = modelDir.resolve("golden.json");
        if (!Files.isRegularFile(g)) {
            fail(g + " is missing");
        }
        return (Map<String, Object>) Json.parse(Files.readString(g));
    }

    static long[] longs(Object list) {
        List<?> l = (List<?>) list;
        long[] a = new long[l.size()];
        for (int i = 0; i < a.length; i++) {
            a[i] = ((Number) l.get(i)).longValue();
        }
        return a;
    }

    static float[] floats(Object list) {
        List<?> l = (List<?>) list;
        float[] a = new float[l.size()];
        for (int i = 0; i < a.length; i++) {
            a[i] = ((Number) l.get(i)).floatValue();
        }
        return a;
    }

    static double maxAbsDiff(float[] a, float[] b) {
        if (a.length != b.length) {
            throw new AssertionError("lengths differ: " + a.length + " vs " + b.length);
        }
        double m = 0;
        for (int i = 0; i < a.length; i++) {
            m = Math.max(m, Math.abs((double) a[i] - b[i]));
        }
        return m;
    }

    /** English text for prompts (written for these tests), repeated to reach at least {@code words} words. */
    static String text(int words) {
        String base = "The old lighthouse keeper climbed the stairs each evening and lit the lamp before the sun went "
                + "down. Ships passing the rocks at night saw the light and turned away from danger. In the morning he "
                + "wrote in his book the names of the vessels, the wind, and the height of the waves. His daughter "
                + "carried bread and water up the hill, and together they watched the sea grow calm again. ";
        StringBuilder b = new StringBuilder();
        while (b.toString().split("\\s+").length < words) {
            b.append(base);
        }
        return b.toString();
    }
}
