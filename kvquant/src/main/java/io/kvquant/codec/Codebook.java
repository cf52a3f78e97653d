package io.kvquant.codec;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Lloyd–Max (1-D k-means) scalar codebook for one coordinate of a randomly rotated unit vector.
 *
 * <p>At dimension d a coordinate t of a uniformly random unit vector has density
 * f(t) ∝ (1 − t²)^((d−3)/2) on [−1, 1]; {@link #forDimension} iterates Lloyd's conditions
 * (boundaries at midpoints, centroids at conditional means) on that exact density, numerically
 * integrated on a fine grid in the scaled variable z = t·√d. {@link #gaussian} does the same for
 * the N(0, 1) limit. Codebooks are cached and immutable.
 */
public final class Codebook {

    public static final int MIN_BITS = 1;
    public static final int MAX_BITS = 8;

    private static final ConcurrentHashMap<Long, Codebook> CACHE = new ConcurrentHashMap<>();
    private static final int GRID = 400_000;

    private final int dim;        // 0 for the unscaled Gaussian limit
    private final int bits;
    private final float[] centroids;   // ascending, in t units (z / √d), or z units when dim == 0
    private final float[] boundaries;  // size - 1 midpoints
    private final double msePerVector; // d · E[(t − c(t))²] = E[(z − c(z))²]

    private Codebook(int dim, int bits, double[] cz, double[] bz, double mse) {
        this.dim = dim;
        this.bits = bits;
        double s = dim == 0 ? 1.0 : 1.0 / Math.sqrt(dim);
        centroids = new float[cz.length];
        for (int i = 0; i < cz.length; i++) {
            centroids[i] = (float) (cz[i] * s);
        }
        boundaries = new float[bz.length];
        for (int i = 0; i < bz.length; i++) {
            boundaries[i] = (float) (bz[i] * s);
        }
        msePerVector = mse;
    }

    /** The codebook for the exact coordinate density at dimension {@code dim} (≥ 2), cached. */
    public static Codebook forDimension(int dim, int bits) {
        checkBits(bits);
        if (dim < 2) {
            throw new IllegalArgumentException("codebook dimension must be >= 2, got " + dim);
        }
        return CACHE.computeIfAbsent(((long) dim << 8) | bits, k -> compute(dim, bits));
    }

    /** The N(0, 1)-limit codebook (unscaled: multiply by 1/√d for dimension d), cached. */
    public static Codebook gaussian(int bits) {
        checkBits(bits);
        return CACHE.computeIfAbsent((long) bits, k -> compute(0, bits));
    }

    static void checkBits(int bits) {
        if (bits < MIN_BITS || bits > MAX_BITS) {
            throw new IllegalArgumentException("unsupported bit width " + bits + " (supported: 1 to 8)");
        }
    }

    private static Codebook compute(int dim, int bits) {
        int levels = 1 << bits;
        // Grid over z = t·√d. For the exact density, z ∈ [−√d, √d]; tails beyond 14σ are negligible.
        double zmax = dim == 0 ? 14.0 : Math.min(Math.sqrt(dim), 14.0);
        double h = 2 * zmax / GRID;
        // Prefix sums over the grid, off the Java heap: 12.8 MB that live for the whole computation,
        // so a young collection during it copied them into the old generation, where they stayed
        // resident after the codebook was done (measured: +27 MiB peak RSS of `kvq generate` on
        // the bundled model when the kernel warm-up's allocations made that collection happen).
        // Same sums in the same order as on the heap, so the same codebook to the last bit.
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment w = arena.allocate(ValueLayout.JAVA_DOUBLE, GRID + 1);   // mass
            MemorySegment wz = arena.allocate(ValueLayout.JAVA_DOUBLE, GRID + 1);  // z·mass
            MemorySegment wzz = arena.allocate(ValueLayout.JAVA_DOUBLE, GRID + 1); // z²·mass
            MemorySegment w3 = arena.allocate(ValueLayout.JAVA_DOUBLE, GRID + 1);  // mass^(1/3): the high-rate optimal point density
            double sw = 0;
            double swz = 0;
            double swzz = 0;
            double sw3 = 0;
            for (int i = 0; i < GRID; i++) {
                double z = cell(zmax, h, i);
                double m;
                if (dim == 0) {
                    m = Math.exp(-0.5 * z * z);
                } else {
                    double t2 = z * z / dim;
                    m = t2 >= 1 ? 0 : Math.pow(1 - t2, (dim - 3) / 2.0);
                }
                sw += m;
                swz += m * z;
                swzz += m * z * z;
                sw3 += Math.cbrt(m);
                w.setAtIndex(ValueLayout.JAVA_DOUBLE, i + 1, sw);
                wz.setAtIndex(ValueLayout.JAVA_DOUBLE, i + 1, swz);
                wzz.setAtIndex(ValueLayout.JAVA_DOUBLE, i + 1, swzz);
                w3.setAtIndex(ValueLayout.JAVA_DOUBLE, i + 1, sw3);
            }
            return lloyd(dim, bits, levels, zmax, h, w, wz, wzz, w3);
        }
    }

    /** Centre of grid cell {@code i}. */
    private static double cell(double zmax, double h, int i) {
        return -zmax + (i + 0.5) * h;
    }

    private static double at(MemorySegment prefix, int i) {
        return prefix.getAtIndex(ValueLayout.JAVA_DOUBLE, i);
    }

    private static Codebook lloyd(int dim, int bits, int levels, double zmax, double h, MemorySegment w, MemorySegment wz,
                                  MemorySegment wzz, MemorySegment w3) {
        double total = at(w, GRID);
        // Initial centroids: quantiles of f^(1/3) (Panter–Dite), close to optimal at every rate.
        double[] c = new double[levels];
        int gi = 0;
        for (int k = 0; k < levels; k++) {
            double target = (k + 0.5) / levels * at(w3, GRID);
            while (gi < GRID - 1 && at(w3, gi + 1) < target) {
                gi++;
            }
            c[k] = cell(zmax, h, gi);
        }
        double[] b = new double[levels - 1];
        int[] cut = new int[levels + 1];
        double prevMse = Double.MAX_VALUE;
        double mse = 0;
        for (int iter = 0; iter < 10_000; iter++) {
            for (int k = 0; k < levels - 1; k++) {
                b[k] = 0.5 * (c[k] + c[k + 1]);
            }
            cut[0] = 0;
            cut[levels] = GRID;
            for (int k = 0; k < levels - 1; k++) {
                // first grid cell whose centre is >= b[k]
                int idx = (int) Math.ceil((b[k] + zmax) / h - 0.5);
                cut[k + 1] = Math.max(cut[k], Math.min(GRID, Math.max(0, idx)));
            }
            mse = 0;
            for (int k = 0; k < levels; k++) {
                double m = at(w, cut[k + 1]) - at(w, cut[k]);
                if (m > 0) {
                    c[k] = (at(wz, cut[k + 1]) - at(wz, cut[k])) / m;
                    double s2 = at(wzz, cut[k + 1]) - at(wzz, cut[k]);
                    mse += s2 - m * c[k] * c[k];
                }
            }
            mse /= total;
            if (Math.abs(prevMse - mse) < 1e-13 * Math.max(mse, 1e-300) && iter > 10) {
                break;
            }
            prevMse = mse;
        }
        // Symmetrize exactly (the density is even).
        for (int k = 0; k < levels / 2; k++) {
            double v = 0.5 * (c[levels - 1 - k] - c[k]);
            c[k] = -v;
            c[levels - 1 - k] = v;
        }
        for (int k = 0; k < levels - 1; k++) {
            b[k] = 0.5 * (c[k] + c[k + 1]);
        }
        return new Codebook(dim, bits, c, b, mse);
    }

    /** Dimension this codebook was computed for; 0 for the unscaled Gaussian limit. */
    public int dim() {
        return dim;
    }

    public int bits() {
        return bits;
    }

    public int size() {
        return centroids.length;
    }

    /** Centroids in ascending order, in the coordinate scale (a copy). */
    public float[] centroids() {
        return centroids.clone();
    }

    /** Decision boundaries (midpoints between consecutive centroids), a copy. */
    public float[] boundaries() {
        return boundaries.clone();
    }

    /** Centroid {@code code}. */
    public float centroid(int code) {
        return centroids[code];
    }

    /** Index of the nearest centroid (binary search over the boundaries). */
    public int quantize(float v) {
        int lo = 0;
        int hi = boundaries.length; // answer in [0, size)
        while (lo < hi) {
            int mid = (lo + hi) >>> 1;
            if (v > boundaries[mid]) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        return lo;
    }

    /** Expected squared error for a unit vector: d × per-coordinate MSE (the ALGORITHM.md table). */
    public double expectedMsePerVector() {
        return msePerVector;
    }

    @Override
    public String toString() {
        return "Codebook[d=" + (dim == 0 ? "gaussian" : dim) + ", b=" + bits + ", mse·d=" + msePerVector
                + ", c=" + Arrays.toString(centroids) + "]";
    }
}
