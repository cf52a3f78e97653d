package io.kvquant.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

/** The kvq command as a user meets it (generate has its own GenerateCliTest): exit codes, one-line errors. */
class CliTest {

    record Run(int code, String out, String err) {
    }

    static Run kvq(String... args) {
        CommandLine cl = new CommandLine(new Kvq());
        cl.setExecutionExceptionHandler(new UserErrors());
        StringWriter err = new StringWriter();
        cl.setErr(new PrintWriter(err));
        PrintStream oldOut = System.out;
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
        StringWriter usage = new StringWriter();
        cl.setOut(new PrintWriter(usage, true));
        try {
            int code = cl.execute(args);
            cl.getOut().flush();
            cl.getErr().flush();
            return new Run(code, usage + out.toString(StandardCharsets.UTF_8), err.toString());
        } finally {
            System.setOut(oldOut);
        }
    }

    private static void assertOneLineError(Run r, String... parts) {
        assertEquals(2, r.code(), r.err());
        String e = r.err().strip();
        assertFalse(e.contains("\n"), "one line, no stack trace: " + e);
        for (String p : parts) {
            assertTrue(e.contains(p), "error should mention '" + p + "': " + e);
        }
    }

    @Test
    void helpListsTheSubcommands() {
        assertEquals(0, kvq("--help").code());
        String usage = new CommandLine(new Kvq()).getUsageMessage();
        assertTrue(usage.contains("generate") && usage.contains("eval") && usage.contains("bench"), usage);
        String eval = new CommandLine(new Kvq()).getSubcommands().get("eval").getUsageMessage();
        assertTrue(eval.contains("distortion"), eval);
    }

    @Test
    void distortionJsonHasTheFields() {
        Run r = kvq("eval", "distortion", "--dim", "64", "--bits", "2", "--vectors", "300", "--rotations", "hadamard", "--json");
        assertEquals(0, r.code(), r.err());
        for (String f : new String[]{"\"rotation\"", "\"dim\"", "\"bits\"", "\"variant\"", "\"d_mse\"", "\"d_prod\"", "\"ip_bias\"",
                "\"lower_bound\"", "\"upper_bound\"", "\"git_commit\""}) {
            assertTrue(r.out().contains(f), f);
        }
        assertOneLineError(kvq("eval", "distortion", "--bits", "9"), "--bits");
    }

    @Test
    void attentionBenchQuickRunsAndReportsRatios() {
        Run r = kvq("bench", "attention", "--head-dims", "64", "--contexts", "128", "--caches", "fp16;turbo2.5", "--threads", "1",
                "--repeats", "1", "--q-heads", "4", "--kv-heads", "2", "--no-warmup", "--json");
        assertEquals(0, r.code(), r.err());
        for (String f : new String[]{"\"cache\"", "\"context\"", "\"threads\"", "\"ns_per_token\"", "\"bytes_per_token\"",
                "\"ratio_vs_fp16\""}) {
            assertTrue(r.out().contains(f), f);
        }
    }
}
