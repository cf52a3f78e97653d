package io.kvquant.eval;

import java.io.PrintWriter;
import java.util.Locale;

/**
 * A one-line progress bar with an estimate of the time left, redrawn in place on a terminal;
 * silent when stderr is not a terminal (logs and CI stay clean).
 */
public final class Progress {
    private final PrintWriter err;
    private final String label;
    private final long total;
    private final boolean enabled;
    private final long start = System.nanoTime();
    private long lastDraw;

    public Progress(PrintWriter err, String label, long total) {
        this(err, label, total, isTerminal());
    }

    Progress(PrintWriter err, String label, long total, boolean enabled) {
        this.err = err;
        this.label = label;
        this.total = Math.max(1, total);
        this.enabled = enabled;
    }

    /** True when the JVM runs attached to an interactive terminal. */
    public static boolean isTerminal() {
        java.io.Console c = System.console();
        return c != null && c.isTerminal();
    }

    /** Redraws the bar (at most ten times a second) for {@code done} units of {@code total}. */
    public void update(long done, String detail) {
        if (!enabled) {
            return;
        }
        long now = System.nanoTime();
        if (done < total && now - lastDraw < 100_000_000L) {
            return;
        }
        lastDraw = now;
        double s = (now - start) / 1e9;
        int width = 28;
        int fill = (int) Math.min(width, done * width / total);
        String eta = done > 0 ? clock(s / done * (total - done)) : "--:--";
        err.printf(Locale.ROOT, "\r\033[2K%s [%s%s] %d%% %s left %s", label, "#".repeat(fill), ".".repeat(width - fill),
                done * 100 / total, eta, detail == null ? "" : detail);
        err.flush();
    }

    /** Clears the bar's line. */
    public void done() {
        if (enabled) {
            err.print("\r\033[2K");
            err.flush();
        }
    }

    /** Formats seconds as m:ss or h:mm:ss. */
    public static String clock(double seconds) {
        long t = Math.round(seconds);
        return t >= 3600 ? String.format(Locale.ROOT, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60)
                : String.format(Locale.ROOT, "%d:%02d", t / 60, t % 60);
    }
}
