package io.kvquant.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.demo.onnx.Json;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code kvq generate --kv auto:3.5}: the probe runs on the prompt, the plan is printed and saved, its bytes are turbo3.5's. */
class GenerateAutoCliTest {

    static final String PROMPT = "In the beginning God created the heaven and the earth. And the earth was without form, "
            + "and void; and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters.";

    @Test
    void autoIsCalibratedOnThePromptAndSpendsTheBytesOfTheUniformSetting(@TempDir Path tmp) throws IOException {
        String model = GenerateCliTest.modelDir().toString();
        Path stats = tmp.resolve("auto.json");
        GenerateCliTest.Run r = GenerateCliTest.kvq("generate", "--model", model, "--prompt", PROMPT, "--kv", "auto:3.5",
                "--max-new-tokens", "4", "--no-stop", "--threads", "1", "--stats-json", stats.toString());
        assertEquals(0, r.code(), r.err());
        List<String> planLines = r.err().lines().filter(l -> l.startsWith("auto plan:")).toList();
        assertEquals(1, planLines.size(), "one plan line on stderr: " + r.err());
        String plan = planLines.get(0);
        Map<?, ?> j = (Map<?, ?>) Json.parse(Files.readString(stats));
        assertEquals(plan, j.get("auto_plan"), "the printed plan is saved in the stats");
        assertEquals("auto:3.5", j.get("kv_requested"));
        String resolved = (String) j.get("kv");
        assertTrue(plan.endsWith(" = " + resolved), plan + " vs " + resolved);
        assertTrue(resolved.startsWith("turbo3.5,layers=0:") && plan.contains("probe KL"), resolved + " / " + plan);

        Path fixed = tmp.resolve("fixed.json");
        GenerateCliTest.Run f = GenerateCliTest.kvq("generate", "--model", model, "--prompt", PROMPT, "--kv", "turbo3.5",
                "--max-new-tokens", "4", "--no-stop", "--threads", "1", "--stats-json", fixed.toString());
        assertEquals(0, f.code(), f.err());
        Map<?, ?> jf = (Map<?, ?>) Json.parse(Files.readString(fixed));
        assertEquals(((Number) jf.get("kv_tokens")).intValue(), ((Number) j.get("kv_tokens")).intValue());
        assertEquals(((Number) jf.get("kv_bytes_used")).longValue(), ((Number) j.get("kv_bytes_used")).longValue(),
                "an auto:3.5 plan holds exactly the bytes of turbo3.5");
    }

    @Test
    void autoNeedsAProbeAndAFreeSetting(@TempDir Path tmp) {
        String model = GenerateCliTest.modelDir().toString();
        GenerateCliTest.assertOneLineError(GenerateCliTest.kvq("generate", "--model", model, "--prompt", "Hi", "--kv", "auto:3.5"),
                "at least 8 tokens");
        GenerateCliTest.assertOneLineError(GenerateCliTest.kvq("generate", "--model", model, "--prompt", PROMPT, "--kv",
                "auto:3.5", "--mode", "graph"), "--mode graph is prepared for one fixed setting");
        GenerateCliTest.assertOneLineError(GenerateCliTest.kvq("generate", "--model", model, "--prompt", PROMPT, "--kv",
                "auto:3.5", "--save-cache", tmp.resolve("c.kvq").toString()), "a prompt cache needs a fixed setting");
    }
}
