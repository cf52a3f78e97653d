package io.kvquant.cache;

import io.kvquant.codec.QjlKind;
import io.kvquant.codec.RotationKind;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Immutable configuration of a KV cache, with a compact text form used by every CLI.
 *
 * <p>Presets: {@code full} (dense fp32), {@code fp16}, {@code turbo<b>} (TurboQuant with b bits
 * for keys and values, e.g. {@code turbo3.5}, {@code turbo2.5}, {@code turbo4}), {@code k<b>v<b>}
 * (TurboQuant, separate key and value bits, e.g. {@code k4v3}), {@code kivi<b>} (the KIVI
 * baseline, 2 or 4 bits). Options follow after commas: {@code window=N} (most recent tokens kept
 * in fp32), {@code boundary=N} (first and last N layers kept in fp32), {@code qjl=none|k|v|kv},
 * {@code sjl=gaussian|orthogonal}, {@code rot=hadamard|haar}, {@code normfix=on|off},
 * {@code seed=N}, {@code group=N} (KIVI group size), {@code page=N} (tokens per page).
 * Example: {@code turbo3.5,window=128,boundary=2,qjl=k}.
 */
public record KvQuantConfig(Kind kind, double keyBits, double valueBits, boolean keyQjl, boolean valueQjl,
                            QjlKind qjlKind, RotationKind rotation, boolean normCorrection, int window,
                            int boundaryLayers, int groupSize, int pageTokens, long seed) {

    /** Cache implementations. */
    public enum Kind { FULL, FP16, TURBO, KIVI }

    public static final int DEFAULT_PAGE_TOKENS = 256;
    public static final long DEFAULT_SEED = 42L;
    private static final List<String> OPTIONS = List.of("window", "boundary", "qjl", "sjl", "rot", "normfix", "seed", "group", "page");

    public KvQuantConfig {
        if (window < 0) {
            throw new IllegalArgumentException("window must be >= 0, got " + window);
        }
        if (boundaryLayers < 0) {
            throw new IllegalArgumentException("boundary must be >= 0, got " + boundaryLayers);
        }
        if (pageTokens < 1 || pageTokens > 1 << 20) {
            throw new IllegalArgumentException("page must be in [1, 1048576] tokens, got " + pageTokens);
        }
        if (kind == Kind.TURBO) {
            checkBits(keyBits, keyQjl, "key");
            checkBits(valueBits, valueQjl, "value");
        }
        if (kind == Kind.KIVI) {
            if (keyBits != valueBits || (keyBits != 2 && keyBits != 4)) {
                throw new IllegalArgumentException("KIVI supports 2 or 4 bits, got " + keyBits);
            }
            if (groupSize < 1) {
                throw new IllegalArgumentException("group must be >= 1, got " + groupSize);
            }
        }
    }

    private static void checkBits(double b, boolean qjl, String what) {
        if (!(b >= 1 && b <= 8) || Math.abs(b * 2 - Math.rint(b * 2)) > 1e-9) {
            throw new IllegalArgumentException(what + " bits must be 1..8 in steps of 0.5, got " + fmt(b));
        }
        if (qjl && b < 2) {
            throw new IllegalArgumentException("QJL on " + what + "s needs at least 2 bits (1 mse + 1 QJL), got " + fmt(b));
        }
    }

    public static KvQuantConfig full() {
        return parse("full");
    }

    /** Parses the compact form; errors name the bad part. */
    public static KvQuantConfig parse(String text) {
        if (text == null || text.isBlank()) {
            throw new IllegalArgumentException("empty KV cache setting (try full, fp16, turbo3.5, turbo2.5, k4v3, kivi2)");
        }
        String[] parts = text.trim().split(",");
        String preset = parts[0].trim().toLowerCase(Locale.ROOT);
        Kind kind;
        double kb = 16;
        double vb = 16;
        int group = 32;
        int window = 0;
        switch (preset) {
            case "full", "fp32" -> kind = Kind.FULL;
            case "fp16" -> kind = Kind.FP16;
            default -> {
                if (preset.startsWith("turbo")) {
                    kind = Kind.TURBO;
                    kb = vb = number(preset.substring(5), preset, text);
                } else if (preset.startsWith("kivi")) {
                    kind = Kind.KIVI;
                    kb = vb = number(preset.substring(4), preset, text);
                    window = 32;
                } else if (preset.matches("k[0-9.]+v[0-9.]+")) {
                    kind = Kind.TURBO;
                    int v = preset.indexOf('v');
                    kb = number(preset.substring(1, v), preset, text);
                    vb = number(preset.substring(v + 1), preset, text);
                } else {
                    throw new IllegalArgumentException("unknown KV cache preset '" + parts[0].trim() + "' in '" + text
                            + "' (known: full, fp16, turbo<bits> e.g. turbo3.5, k<bits>v<bits> e.g. k4v3, kivi2, kivi4)");
                }
            }
        }
        boolean kq = false;
        boolean vq = false;
        QjlKind sjl = QjlKind.GAUSSIAN;
        RotationKind rot = RotationKind.HADAMARD;
        boolean normfix = false;
        int boundary = 0;
        int page = DEFAULT_PAGE_TOKENS;
        long seed = DEFAULT_SEED;
        for (int i = 1; i < parts.length; i++) {
            String p = parts[i].trim();
            int eq = p.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException("option '" + p + "' in '" + text + "' is not of the form name=value");
            }
            String key = p.substring(0, eq).trim().toLowerCase(Locale.ROOT);
            String val = p.substring(eq + 1).trim().toLowerCase(Locale.ROOT);
            if ((kind == Kind.FULL || kind == Kind.FP16) && !key.equals("page")) {
                throw new IllegalArgumentException("option '" + key + "' does not apply to '" + preset + "' in '" + text + "'");
            }
            switch (key) {
                case "window" -> window = integer(val, p, text);
                case "boundary" -> boundary = integer(val, p, text);
                case "group" -> group = integer(val, p, text);
                case "page" -> page = integer(val, p, text);
                case "seed" -> seed = integer(val, p, text);
                case "qjl" -> {
                    switch (val) {
                        case "none", "off" -> {
                            kq = false;
                            vq = false;
                        }
                        case "k" -> {
                            kq = true;
                            vq = false;
                        }
                        case "v" -> {
                            kq = false;
                            vq = true;
                        }
                        case "kv", "on" -> {
                            kq = true;
                            vq = true;
                        }
                        default -> throw new IllegalArgumentException("qjl must be none, k, v or kv, not '" + val + "' in '" + text + "'");
                    }
                }
                case "sjl" -> sjl = switch (val) {
                    case "gaussian" -> QjlKind.GAUSSIAN;
                    case "orthogonal", "orth" -> QjlKind.ORTHOGONAL;
                    default -> throw new IllegalArgumentException("sjl must be gaussian or orthogonal, not '" + val + "' in '" + text + "'");
                };
                case "rot" -> {
                    try {
                        rot = RotationKind.parse(val);
                    } catch (IllegalArgumentException e) {
                        throw new IllegalArgumentException(e.getMessage() + " in '" + text + "'");
                    }
                }
                case "normfix" -> normfix = switch (val) {
                    case "on", "true", "1" -> true;
                    case "off", "false", "0" -> false;
                    default -> throw new IllegalArgumentException("normfix must be on or off, not '" + val + "' in '" + text + "'");
                };
                default -> throw new IllegalArgumentException("unknown option '" + key + "' in '" + text + "' (known: "
                        + String.join(", ", OPTIONS) + ")");
            }
            if (kind == Kind.KIVI && (key.equals("qjl") || key.equals("sjl") || key.equals("rot") || key.equals("normfix"))) {
                throw new IllegalArgumentException("option '" + key + "' does not apply to KIVI in '" + text + "'");
            }
        }
        try {
            return new KvQuantConfig(kind, kb, vb, kq, vq, sjl, rot, normfix, window, boundary, group, page, seed);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(e.getMessage() + " in '" + text + "'");
        }
    }

    private static double number(String s, String part, String text) {
        try {
            return Double.parseDouble(s);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("cannot read the bit width in '" + part + "' of '" + text + "'");
        }
    }

    private static int integer(String s, String part, String text) {
        try {
            return Integer.parseInt(s);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("option '" + part + "' in '" + text + "' needs an integer value");
        }
    }

    private static String fmt(double b) {
        return b == Math.rint(b) ? Integer.toString((int) b) : Double.toString(b);
    }

    /** The canonical compact form; {@code parse(toString())} gives an equal record. */
    @Override
    public String toString() {
        List<String> p = new ArrayList<>();
        switch (kind) {
            case FULL -> p.add("full");
            case FP16 -> p.add("fp16");
            case KIVI -> p.add("kivi" + fmt(keyBits));
            case TURBO -> p.add(keyBits == valueBits ? "turbo" + fmt(keyBits) : "k" + fmt(keyBits) + "v" + fmt(valueBits));
        }
        if (kind == Kind.TURBO || kind == Kind.KIVI) {
            if (window != (kind == Kind.KIVI ? 32 : 0)) {
                p.add("window=" + window);
            }
            if (boundaryLayers != 0) {
                p.add("boundary=" + boundaryLayers);
            }
        }
        if (kind == Kind.TURBO) {
            if (keyQjl || valueQjl) {
                p.add("qjl=" + (keyQjl ? "k" : "") + (valueQjl ? "v" : ""));
            }
            if (qjlKind != QjlKind.GAUSSIAN) {
                p.add("sjl=orthogonal");
            }
            if (rotation != RotationKind.HADAMARD) {
                p.add("rot=" + rotation.name().toLowerCase(Locale.ROOT));
            }
            if (normCorrection) {
                p.add("normfix=on");
            }
        }
        if (kind == Kind.KIVI && groupSize != 32) {
            p.add("group=" + groupSize);
        }
        if (seed != DEFAULT_SEED && (kind == Kind.TURBO || kind == Kind.KIVI)) {
            p.add("seed=" + seed);
        }
        if (pageTokens != DEFAULT_PAGE_TOKENS) {
            p.add("page=" + pageTokens);
        }
        return String.join(",", p);
    }

    /** True if layer {@code layer} of {@code layers} is kept in full precision as a boundary layer. */
    public boolean isBoundary(int layer, int layers) {
        return layer < boundaryLayers || layer >= layers - boundaryLayers;
    }
}
