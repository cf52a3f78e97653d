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
 * in fp32), {@code mid=N} (TurboQuant: the N tokens after the window held at
 * {@link #layerMidBits} bits, then re-encoded at the setting's bits; 0: none), {@code vrot=K}
 * (TurboQuant: value records in K rotation seeds by {@link #VALUE_ROTATION_BLOCK}-token block), {@code boundary=N} (first and last N layers kept in fp32), {@code qjl=none|k|v|kv},
 * {@code sjl=gaussian|orthogonal}, {@code rot=hadamard|haar}, {@code normfix=on|off},
 * {@code seed=N}, {@code group=N} (KIVI group size), {@code page=N} (tokens per page),
 * {@code center=on|off} (store keys centered on a per-layer, per-head mean: see {@link LayeredKvCache}),
 * {@code kscale=on|off|<α>} (store keys divided by a per-layer, per-channel power-of-two scale and
 * multiply queries by it; exact: see {@link LayeredKvCache}; on by default with centering),
 * {@code winbits=16|32} (the TurboQuant window in fp16, the presets' default, or fp32),
 * {@code trim=kv|v|off} (with a window, at head dims below 128 the records spend b + 1/8 bits per
 * element with their norm, as at d = 128, so that the window fits: {@link KvCaches#codeBits}),
 * {@code layers=R:S} (repeatable per-layer override: R a layer or range {@code 0-1}, S
 * {@code k<b>v<b>}, {@code turbo<b>}, {@code full} or {@code fp16}; later overrides win).
 * {@code auto:<b>} is a TurboQuant setting whose per-layer, per-K/V bits are chosen by a
 * calibration probe ({@link BitAllocation}) for an average of b bits; it must be resolved
 * ({@link #withLayers}) before a cache is built.
 *
 * <p>The plain TurboQuant presets carry the defaults chosen by measurement (docs/quality.md):
 * keys centered ({@link #DEFAULT_CENTER}) and scaled per channel ({@link #DEFAULT_KEY_SCALE}), a {@link #DEFAULT_TURBO_WINDOW}-token
 * full-precision window held in fp16 ({@link #DEFAULT_WINDOW_BITS}), a {@link #DEFAULT_TURBO_MID}-token middle tier
 * after it ({@code mid=}), {@link #DEFAULT_TURBO_VALUE_ROTATIONS} value rotations ({@code vrot=}), and below head dim 128 value
 * records trimmed to pay for it ({@link #DEFAULT_TRIM}); {@code window=0} and {@code center=off} give the bare codec for ablations.
 * Example: {@code turbo3.5,window=128,boundary=2,qjl=k}.
 */
public record KvQuantConfig(Kind kind, double keyBits, double valueBits, boolean keyQjl, boolean valueQjl,
                            QjlKind qjlKind, RotationKind rotation, boolean normCorrection, int window,
                            int boundaryLayers, int groupSize, int pageTokens, long seed, boolean center,
                            List<LayerOverride> layers, double autoBits, Trim trim, int windowBits, double keyScale,
                            int mid, int valueRotations) {

    /**
     * One per-layer override: layers [first, last] stored as {@code kind} (TURBO with its own key
     * and value bits, FULL or FP16 dense).
     */
    public record LayerOverride(int first, int last, Kind kind, double keyBits, double valueBits) {
        public LayerOverride {
            if (first < 0 || last < first) {
                throw new IllegalArgumentException("layer range " + first + "-" + last + " is empty or negative");
            }
            if (kind != Kind.TURBO && kind != Kind.FULL && kind != Kind.FP16) {
                throw new IllegalArgumentException("a layer override is TurboQuant, full or fp16, not " + kind);
            }
        }

        /** The text form after {@code layers=}: {@code 0-1:k8v4}. */
        @Override
        public String toString() {
            String r = first == last ? Integer.toString(first) : first + "-" + last;
            return r + ":" + switch (kind) {
                case FULL -> "full";
                case FP16 -> "fp16";
                default -> "k" + fmt(keyBits) + "v" + fmt(valueBits);
            };
        }

        boolean covers(int layer) {
            return layer >= first && layer <= last;
        }
    }

    /** Cache implementations. */
    public enum Kind { FULL, FP16, TURBO, KIVI }

    /**
     * How a TurboQuant setting with a window pays for it at head dims below 128 ({@link KvCaches#codeBits}):
     * not at all ({@code off}), by trimming keys and values alike ({@code kv}), or values only ({@code v}).
     */
    public enum Trim { OFF, KV, V }

    public static final int DEFAULT_PAGE_TOKENS = 256;
    public static final long DEFAULT_SEED = 42L;
    /** Full-precision recent tokens of the plain TurboQuant presets (chosen by measurement, docs/quality.md). */
    public static final int DEFAULT_TURBO_WINDOW = 32;
    /**
     * Tokens after the window that the plain TurboQuant presets hold in a middle tier at
     * {@link #layerMidBits} (chosen by measurement, docs/quality.md: most of the attention error
     * on hard text comes from the few hundred tokens after the window); with the 32-token window,
     * 768 tokens are held at more than the setting's bits.
     */
    public static final int DEFAULT_TURBO_MID = 736;
    /** Whether the plain TurboQuant presets store keys centered (chosen by measurement, docs/quality.md). */
    public static final boolean DEFAULT_CENTER = true;
    /**
     * Whether the TurboQuant presets trim their codec at head dims below 128 so that the window is
     * paid for (see {@link KvCaches#codeBits}; chosen by measurement, docs/quality.md).
     */
    public static final Trim DEFAULT_TRIM = Trim.V;
    /** Bits per element of the TurboQuant presets' full-precision window (fp16: measured to cost nothing, docs/quality.md). */
    public static final int DEFAULT_WINDOW_BITS = 16;
    /** Exponent of {@code kscale=on}: s = (channel RMS)^½, see {@link LayeredKvCache}. */
    public static final double KEY_SCALE_ON = 0.5;
    /**
     * The TurboQuant presets' per-channel key scaling exponent (0: off; chosen by measurement,
     * docs/quality.md); it goes with centering: a setting with {@code center=off} has none unless
     * {@code kscale=} says so.
     */
    public static final double DEFAULT_KEY_SCALE = KEY_SCALE_ON;
    private static final List<String> OPTIONS = List.of("window", "mid", "vrot", "winbits", "boundary", "center", "kscale", "trim", "layers", "qjl", "sjl", "rot",
            "normfix", "seed", "group", "page");

    /** The form without centering, per-layer overrides or calibration (kept for existing callers). */
    public KvQuantConfig(Kind kind, double keyBits, double valueBits, boolean keyQjl, boolean valueQjl, QjlKind qjlKind,
                         RotationKind rotation, boolean normCorrection, int window, int boundaryLayers, int groupSize,
                         int pageTokens, long seed) {
        this(kind, keyBits, valueBits, keyQjl, valueQjl, qjlKind, rotation, normCorrection, window, boundaryLayers,
                groupSize, pageTokens, seed, false, List.of(), 0, Trim.OFF, 32, 0, 0, 1);
    }

    public KvQuantConfig {
        layers = layers == null ? List.of() : List.copyOf(layers);
        if (!layers.isEmpty() && kind != Kind.TURBO) {
            throw new IllegalArgumentException("per-layer overrides (layers=) apply to TurboQuant settings, not " + kind);
        }
        for (LayerOverride o : layers) {
            if (o.kind() == Kind.TURBO) {
                checkBits(o.keyBits(), keyQjl, "layer " + o.first() + " key");
                checkBits(o.valueBits(), valueQjl, "layer " + o.first() + " value");
            }
        }
        if (autoBits != 0) {
            if (kind != Kind.TURBO || !(autoBits >= 2 && autoBits <= 8)) {
                throw new IllegalArgumentException("auto budget must be in [2, 8] bits, got " + fmt(autoBits));
            }
            if (!layers.isEmpty()) {
                throw new IllegalArgumentException("auto: chooses the per-layer bits itself; drop layers=");
            }
            if (boundaryLayers != 0) {
                throw new IllegalArgumentException("auto: chooses the per-layer bits itself; drop boundary=");
            }
        }
        trim = trim == null ? Trim.OFF : trim;
        if (!(keyScale >= 0 && keyScale <= 1)) {
            throw new IllegalArgumentException("kscale must be on, off or an exponent in [0, 1], got " + keyScale);
        }
        if (keyScale != 0 && kind != Kind.TURBO) {
            throw new IllegalArgumentException("kscale applies to TurboQuant settings, not " + kind);
        }
        if (windowBits != 16 && windowBits != 32) {
            throw new IllegalArgumentException("winbits must be 16 or 32, got " + windowBits);
        }
        if (windowBits != 32 && kind != Kind.TURBO) {
            throw new IllegalArgumentException("winbits=16 applies to TurboQuant settings, not " + kind);
        }
        if (trim != Trim.OFF && kind != Kind.TURBO) {
            throw new IllegalArgumentException("trim applies to TurboQuant settings, not " + kind);
        }
        if (window < 0) {
            throw new IllegalArgumentException("window must be >= 0, got " + window);
        }
        if (mid < 0 || mid > 1 << 20) {
            throw new IllegalArgumentException("mid must be in [0, 1048576] tokens, got " + mid);
        }
        if (mid != 0 && kind != Kind.TURBO) {
            throw new IllegalArgumentException("mid applies to TurboQuant settings, not " + kind);
        }
        if (valueRotations < 1 || valueRotations > MAX_VALUE_ROTATIONS) {
            throw new IllegalArgumentException("vrot must be in [1, " + MAX_VALUE_ROTATIONS + "], got " + valueRotations);
        }
        if (valueRotations != 1 && kind != Kind.TURBO) {
            throw new IllegalArgumentException("vrot applies to TurboQuant settings, not " + kind);
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

    /** Options only TurboQuant settings take (kivi and the dense kinds refuse them). */
    private static final java.util.Set<String> TURBO_OPTIONS = java.util.Set.of("mid", "vrot", "kscale", "winbits", "trim", "layers");

    /** Parses the compact form; errors name the bad part. */
    public static KvQuantConfig parse(String text) {
        if (text == null || text.isBlank()) {
            throw new IllegalArgumentException("empty KV cache setting (try full, fp16, turbo3.5, turbo2.5, k4v3, kivi2, auto:3.5)");
        }
        String[] parts = text.trim().split(",");
        String preset = parts[0].trim().toLowerCase(Locale.ROOT);
        Kind kind;
        double kb = 16;
        double vb = 16;
        double auto = 0;
        int group = 32;
        int window = 0;
        boolean center = false;
        Trim trim = Trim.OFF;
        int winBits = 32;
        double kscale = 0;
        switch (preset) {
            case "full", "fp32" -> kind = Kind.FULL;
            case "fp16" -> kind = Kind.FP16;
            default -> {
                if (preset.startsWith("turbo")) {
                    kind = Kind.TURBO;
                    kb = vb = number(preset.substring(5), preset, text);
                } else if (preset.startsWith("auto:") || preset.startsWith("auto")) {
                    kind = Kind.TURBO;
                    String b = preset.substring(preset.startsWith("auto:") ? 5 : 4);
                    auto = number(b, preset, text);
                    if (!(auto >= 2 && auto <= 8)) {
                        throw new IllegalArgumentException("the auto budget in '" + preset + "' of '" + text
                                + "' must be in [2, 8] bits");
                    }
                    kb = vb = Math.rint(auto * 2) / 2; // the base codec until a plan replaces it
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
                            + "' (known: full, fp16, turbo<bits> e.g. turbo3.5, k<bits>v<bits> e.g. k4v3, auto:<bits> "
                            + "e.g. auto:3.5, kivi2, kivi4)");
                }
            }
        }
        if (kind == Kind.TURBO) {
            window = DEFAULT_TURBO_WINDOW;
            center = DEFAULT_CENTER;
            trim = DEFAULT_TRIM;
            winBits = DEFAULT_WINDOW_BITS;
        }
        boolean kscaleGiven = false;
        boolean midGiven = false;
        int mid = 0;
        boolean vrotGiven = false;
        int vrot = 1;
        boolean kq = false;
        boolean vq = false;
        QjlKind sjl = QjlKind.GAUSSIAN;
        RotationKind rot = RotationKind.HADAMARD;
        boolean normfix = false;
        int boundary = 0;
        int page = DEFAULT_PAGE_TOKENS;
        long seed = DEFAULT_SEED;
        List<LayerOverride> overrides = new ArrayList<>();
        for (int i = 1; i < parts.length; i++) {
            String p = parts[i].trim();
            int eq = p.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException("option '" + p + "' in '" + text + "' is not of the form name=value");
            }
            String key = p.substring(0, eq).trim().toLowerCase(Locale.ROOT);
            String val = p.substring(eq + 1).trim().toLowerCase(Locale.ROOT);
            if ((kind == Kind.FULL || kind == Kind.FP16) && !key.equals("page") && !key.equals("center")) {
                throw new IllegalArgumentException("option '" + key + "' does not apply to '" + preset + "' in '" + text + "'");
            }
            if (kind != Kind.TURBO && TURBO_OPTIONS.contains(key)) {
                throw new IllegalArgumentException("option '" + key + "' applies to TurboQuant settings, not '" + preset
                        + "' in '" + text + "'");
            }
            switch (key) {
                case "window" -> window = integer(val, p, text);
                case "mid" -> {
                    midGiven = true;
                    mid = integer(val, p, text);
                }
                case "vrot" -> {
                    vrotGiven = true;
                    vrot = integer(val, p, text);
                }
                case "boundary" -> boundary = integer(val, p, text);
                case "group" -> group = integer(val, p, text);
                case "page" -> page = integer(val, p, text);
                case "seed" -> seed = integer(val, p, text);
                case "center" -> center = onOff(val, "center", text);
                case "kscale" -> {
                    kscaleGiven = true;
                    kscale = switch (val) {
                        case "on", "true" -> KEY_SCALE_ON;
                        case "off", "false" -> 0;
                        default -> {
                            double a;
                            try {
                                a = Double.parseDouble(val);
                            } catch (NumberFormatException e) {
                                a = -1;
                            }
                            if (!(a >= 0 && a <= 1)) {
                                throw new IllegalArgumentException("kscale must be on, off or an exponent in [0, 1], not '" + val
                                        + "' in '" + text + "'");
                            }
                            yield a;
                        }
                    };
                }
                case "winbits" -> {
                    winBits = integer(val, p, text);
                    if (winBits != 16 && winBits != 32) {
                        throw new IllegalArgumentException("winbits must be 16 or 32, not '" + val + "' in '" + text + "'");
                    }
                }
                case "trim" -> {
                    trim = switch (val) {
                        case "kv", "on" -> Trim.KV;
                        case "v" -> Trim.V;
                        case "off" -> Trim.OFF;
                        default -> throw new IllegalArgumentException("trim must be kv, v or off, not '" + val + "' in '"
                                + text + "'");
                    };
                }
                case "layers" -> {
                    if (auto != 0) {
                        throw new IllegalArgumentException("'" + preset + "' chooses the per-layer bits itself: drop '" + p
                                + "' from '" + text + "'");
                    }
                    overrides.add(override(val, p, text));
                }
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
                case "normfix" -> normfix = onOff(val, "normfix", text);
                default -> throw new IllegalArgumentException("unknown option '" + key + "' in '" + text + "' (known: "
                        + String.join(", ", OPTIONS) + ")");
            }
            if (kind == Kind.KIVI && (key.equals("qjl") || key.equals("sjl") || key.equals("rot") || key.equals("normfix"))) {
                throw new IllegalArgumentException("option '" + key + "' does not apply to KIVI in '" + text + "'");
            }
        }
        if (!kscaleGiven) {
            kscale = defaultKeyScale(kind, center);
        }
        try {
            return new KvQuantConfig(kind, kb, vb, kq, vq, sjl, rot, normfix, window, boundary, group, page, seed, center,
                    overrides, auto, trim, winBits, kscale, midGiven ? mid : defaultMid(kind, window),
                    vrotGiven ? vrot : defaultValueRotations(kind, window));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(e.getMessage() + " in '" + text + "'");
        }
    }

    private static boolean onOff(String val, String key, String text) {
        return switch (val) {
            case "on", "true", "1" -> true;
            case "off", "false", "0" -> false;
            default -> throw new IllegalArgumentException(key + " must be on or off, not '" + val + "' in '" + text + "'");
        };
    }

    /** {@code 0-1:k8v4}, {@code 3:turbo2.5}, {@code 2:4} (both), {@code 0:full}, {@code 0:fp16}. */
    private static LayerOverride override(String val, String part, String text) {
        int colon = val.indexOf(':');
        if (colon <= 0 || colon == val.length() - 1) {
            throw new IllegalArgumentException("option '" + part + "' in '" + text
                    + "' must be layers=<layer or range>:<setting>, e.g. layers=0-1:k8v4");
        }
        String range = val.substring(0, colon);
        String what = val.substring(colon + 1);
        int first;
        int last;
        try {
            int dash = range.indexOf('-');
            first = Integer.parseInt(dash < 0 ? range : range.substring(0, dash));
            last = dash < 0 ? first : Integer.parseInt(range.substring(dash + 1));
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("cannot read the layer range '" + range + "' of '" + part + "' in '" + text
                    + "' (a layer like 2 or a range like 0-1)");
        }
        if (first < 0 || last < first) {
            throw new IllegalArgumentException("the layer range '" + range + "' of '" + part + "' in '" + text + "' is empty");
        }
        Kind k = Kind.TURBO;
        double kb;
        double vb;
        if (what.equals("full") || what.equals("fp32")) {
            k = Kind.FULL;
            kb = vb = 32;
        } else if (what.equals("fp16")) {
            k = Kind.FP16;
            kb = vb = 16;
        } else if (what.matches("k[0-9.]+v[0-9.]+")) {
            int v = what.indexOf('v');
            kb = number(what.substring(1, v), what, text);
            vb = number(what.substring(v + 1), what, text);
        } else if (what.startsWith("turbo")) {
            kb = vb = number(what.substring(5), what, text);
        } else {
            try {
                kb = vb = Double.parseDouble(what);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("unknown layer setting '" + what + "' in '" + part + "' of '" + text
                        + "' (known: k<bits>v<bits>, turbo<bits>, <bits>, full, fp16)");
            }
        }
        return new LayerOverride(first, last, k, kb, vb);
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
            case TURBO -> p.add(autoBits != 0 ? "auto:" + fmt(autoBits)
                    : keyBits == valueBits ? "turbo" + fmt(keyBits) : "k" + fmt(keyBits) + "v" + fmt(valueBits));
        }
        if (kind == Kind.TURBO || kind == Kind.KIVI) {
            if (window != (kind == Kind.KIVI ? 32 : DEFAULT_TURBO_WINDOW)) {
                p.add("window=" + window);
            }
            if (kind == Kind.TURBO && mid != defaultMid(kind, window)) {
                p.add("mid=" + mid);
            }
            if (kind == Kind.TURBO && valueRotations != defaultValueRotations(kind, window)) {
                p.add("vrot=" + valueRotations);
            }
            if (boundaryLayers != 0) {
                p.add("boundary=" + boundaryLayers);
            }
        }
        if (center != (kind == Kind.TURBO && DEFAULT_CENTER)) {
            p.add("center=" + (center ? "on" : "off"));
        }
        if (kind == Kind.TURBO && keyScale != defaultKeyScale(kind, center)) {
            p.add("kscale=" + (keyScale == 0 ? "off" : keyScale == KEY_SCALE_ON ? "on" : Double.toString(keyScale)));
        }
        if (kind == Kind.TURBO && windowBits != DEFAULT_WINDOW_BITS) {
            p.add("winbits=" + windowBits);
        }
        if (kind == Kind.TURBO && trim != DEFAULT_TRIM) {
            p.add("trim=" + trim.name().toLowerCase(Locale.ROOT));
        }
        for (LayerOverride o : layers) {
            p.add("layers=" + o);
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

    /** The last override covering {@code layer}, or null. */
    private LayerOverride overrideOf(int layer) {
        LayerOverride found = null;
        for (LayerOverride o : this.layers) {
            if (o.covers(layer)) {
                found = o;
            }
        }
        return found;
    }

    /**
     * How layer {@code layer} of {@code layerCount} is stored: the setting's kind, FULL for a
     * boundary layer of a quantized setting, or what a {@code layers=} override says (overrides
     * win over boundary layers).
     */
    public Kind layerKind(int layer, int layerCount) {
        LayerOverride o = overrideOf(layer);
        if (o != null) {
            return o.kind();
        }
        if ((kind == Kind.TURBO || kind == Kind.KIVI) && isBoundary(layer, layerCount)) {
            return Kind.FULL;
        }
        return kind;
    }

    /** Key bits of a TurboQuant layer (the override's, else the setting's). */
    public double layerKeyBits(int layer) {
        LayerOverride o = overrideOf(layer);
        return o != null && o.kind() == Kind.TURBO ? o.keyBits() : keyBits;
    }

    /** Value bits of a TurboQuant layer (the override's, else the setting's). */
    public double layerValueBits(int layer) {
        LayerOverride o = overrideOf(layer);
        return o != null && o.kind() == Kind.TURBO ? o.valueBits() : valueBits;
    }

    /**
     * The middle tier a TurboQuant setting gets when {@code mid=} is not given: {@link #DEFAULT_TURBO_MID}
     * tokens when it has a window, none without one, so that {@code turbo3.5,window=0,center=off}
     * stays the bare codec.
     */
    static int defaultMid(Kind kind, int window) {
        return kind == Kind.TURBO && window > 0 ? DEFAULT_TURBO_MID : 0;
    }

    /**
     * Code bits of the middle tier's key ({@code key}) or value records of a TurboQuant layer:
     * 1.5 more than the layer's own ({@code turbo3.5}: 5, {@code turbo2.5}: 4, {@code k4v3}: 5.5
     * and 4.5), at most 8. The same 1.5 bits everywhere keep the tier's bytes those of the uniform
     * setting for every plan of the same average ({@code auto:3.5}, {@code k4v3}, {@code k3v4}
     * against {@code turbo3.5}): a record's bytes grow linearly in half bits.
     */
    public double layerMidBits(int layer, boolean key) {
        return Math.min(8, (key ? layerKeyBits(layer) : layerValueBits(layer)) + MID_EXTRA_BITS);
    }

    /**
     * Value rotations a TurboQuant setting gets when {@code vrot=} is not given:
     * {@link #DEFAULT_TURBO_VALUE_ROTATIONS} with a window, one without, so that
     * {@code turbo3.5,window=0,center=off} stays the bare codec.
     */
    static int defaultValueRotations(Kind kind, int window) {
        return kind == Kind.TURBO && window > 0 ? DEFAULT_TURBO_VALUE_ROTATIONS : 1;
    }

    /**
     * The presets' value rotations ({@code vrot=}): value records of token t use rotation seed
     * number (t / {@link #VALUE_ROTATION_BLOCK}) mod K. Values carry no position, so identical
     * tokens have identical values and, under one rotation, identical rounding errors, which
     * attention sums coherently; K seeds make them K independent groups (docs/quality.md, "Value
     * rotations"). No bytes: a token's seed follows from its position.
     */
    public static final int DEFAULT_TURBO_VALUE_ROTATIONS = 4;
    /** Tokens per block of one value rotation: the prefill kernel's tile, so that no tile is cut. */
    public static final int VALUE_ROTATION_BLOCK = 128;
    /** Most value rotations a setting may ask for (each adds a value accumulator per query). */
    public static final int MAX_VALUE_ROTATIONS = 16;

    /** Bits the middle tier adds to a layer's own ({@link #layerMidBits}). */
    public static final double MID_EXTRA_BITS = 1.5;

    /** True for an {@code auto:<b>} setting not yet resolved by a calibration probe. */
    public boolean needsCalibration() {
        return autoBits != 0;
    }

    /** This setting with per-layer overrides (replacing any) and without the auto budget: a resolved plan. */
    public KvQuantConfig withLayers(List<LayerOverride> plan) {
        return new KvQuantConfig(kind, keyBits, valueBits, keyQjl, valueQjl, qjlKind, rotation, normCorrection, window,
                boundaryLayers, groupSize, pageTokens, seed, center, plan, 0, trim, windowBits, keyScale, mid, valueRotations);
    }

    /**
     * The key scaling a TurboQuant setting gets when {@code kscale=} is not given: the presets'
     * ({@link #DEFAULT_KEY_SCALE}) with centering, none without it, so that {@code center=off}
     * (e.g. {@code turbo3.5,window=0,center=off}, the bare codec) keeps the raw keys.
     */
    static double defaultKeyScale(Kind kind, boolean center) {
        return kind == Kind.TURBO && center ? DEFAULT_KEY_SCALE : 0;
    }

    /** This setting with per-channel key scaling at exponent {@code alpha} (0: off). */
    public KvQuantConfig withKeyScale(double alpha) {
        return new KvQuantConfig(kind, keyBits, valueBits, keyQjl, valueQjl, qjlKind, rotation, normCorrection, window,
                boundaryLayers, groupSize, pageTokens, seed, center, layers, autoBits, trim, windowBits, alpha, mid, valueRotations);
    }

    /** This setting with centering on or off. */
    public KvQuantConfig withCenter(boolean on) {
        return new KvQuantConfig(kind, keyBits, valueBits, keyQjl, valueQjl, qjlKind, rotation, normCorrection, window,
                boundaryLayers, groupSize, pageTokens, seed, on, layers, autoBits, trim, windowBits, keyScale, mid, valueRotations);
    }

    /** This setting with another full-precision window. */
    public KvQuantConfig withWindow(int tokens) {
        return new KvQuantConfig(kind, keyBits, valueBits, keyQjl, valueQjl, qjlKind, rotation, normCorrection, tokens,
                boundaryLayers, groupSize, pageTokens, seed, center, layers, autoBits, trim, windowBits, keyScale, mid, valueRotations);
    }

    /** This setting with another middle tier ({@code mid=}: tokens after the window held at more bits; 0: none). */
    public KvQuantConfig withMid(int tokens) {
        return new KvQuantConfig(kind, keyBits, valueBits, keyQjl, valueQjl, qjlKind, rotation, normCorrection, window,
                boundaryLayers, groupSize, pageTokens, seed, center, layers, autoBits, trim, windowBits, keyScale, tokens, valueRotations);
    }

    /** Throws when an override names a layer beyond {@code layerCount}. */
    public void checkLayers(int layerCount) {
        for (LayerOverride o : layers) {
            if (o.last() >= layerCount) {
                throw new IllegalArgumentException("layers=" + o + " in '" + this + "' names layer " + o.last()
                        + ", beyond the model's " + layerCount + " layers (0-" + (layerCount - 1) + ")");
            }
        }
    }
}
