package io.kvquant.simd;

import java.lang.System.Logger.Level;

/**
 * Chooses the kernel backend once, at class initialisation, and says which.
 *
 * <p>System property {@code kvquant.simd}: {@code auto} (default: the Vector API when
 * {@code jdk.incubator.vector} is in the boot layer), {@code vector} (require it) or
 * {@code scalar} (plain Java). With {@code kvquant.simd.require=true} a missing vector path is
 * an error instead of a warning, so CI cannot fall back silently.
 */
public final class Simd {

    private static final System.Logger LOG = System.getLogger("io.kvquant.simd");
    private static final VectorOps OPS;
    private static final int BITS;

    static {
        String mode = System.getProperty("kvquant.simd", "auto").trim().toLowerCase(java.util.Locale.ROOT);
        boolean require = Boolean.getBoolean("kvquant.simd.require");
        boolean available = ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent();
        VectorOps ops;
        int bits;
        switch (mode) {
            case "scalar" -> {
                ops = ScalarOps.INSTANCE;
                bits = 0;
            }
            case "auto", "vector" -> {
                if (available) {
                    ops = new PanamaOps();
                    bits = PanamaOps.F.vectorBitSize();
                } else {
                    if (require || mode.equals("vector")) {
                        throw new IllegalStateException("kvquant: the Vector API path was required but "
                                + "jdk.incubator.vector is not in the boot layer; run java with "
                                + "--add-modules jdk.incubator.vector");
                    }
                    LOG.log(Level.WARNING, "kvquant: jdk.incubator.vector is not available; using scalar "
                            + "kernels. Add --add-modules jdk.incubator.vector for SIMD.");
                    ops = ScalarOps.INSTANCE;
                    bits = 0;
                }
            }
            default -> throw new IllegalArgumentException("kvquant.simd must be auto, vector or scalar, not '"
                    + mode + "'");
        }
        if (require && bits == 0) {
            throw new IllegalStateException("kvquant: kvquant.simd.require=true but the scalar path is active"
                    + " (kvquant.simd=" + mode + ")");
        }
        OPS = ops;
        BITS = bits;
        LOG.log(Level.DEBUG, "kvquant kernels: " + ops.name());
    }

    private Simd() {
    }

    /** The backend chosen at start-up. */
    public static VectorOps ops() {
        return OPS;
    }

    /** True when the Vector API backend is active. */
    public static boolean vectorized() {
        return BITS > 0;
    }

    /** Preferred vector width in bits, 0 on the scalar path. */
    public static int vectorBitSize() {
        return BITS;
    }

    /** The Vector API backend, for tests that compare it with the scalar one. */
    public static VectorOps vectorOpsOrNull() {
        return ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent() ? new PanamaOps() : null;
    }

    /** One-line description for logs and run metadata. */
    public static String describe() {
        return OPS.name();
    }
}
