package io.kvquant.codec;

import java.lang.foreign.MemorySegment;
import java.util.Arrays;

/**
 * Outlier-channel split: the channels of a vector are divided into an outlier set and the rest,
 * and each set is quantized by its own codec (own rotation, own norm). Use it when a few raw
 * channels carry much of the energy (keys of many LLMs); it costs one extra norm per vector
 * compared with a rotated-domain split ({@link Codecs#turbo}).
 *
 * <p>Record: the outlier codec's record, then the other codec's record.
 */
public final class MixedPrecision implements VectorCodec {

    private final int dim;
    private final int[] outliers;
    private final int[] rest;
    private final VectorCodec hi;
    private final VectorCodec lo;
    private final ThreadLocal<float[][]> scratch;

    /**
     * @param outlierChannels distinct channel indices in [0, dim), the set quantized by {@code hi}
     * @param hi              codec of dimension outlierChannels.length
     * @param lo              codec of dimension dim − outlierChannels.length
     */
    public MixedPrecision(int dim, int[] outlierChannels, VectorCodec hi, VectorCodec lo) {
        this.dim = dim;
        this.outliers = outlierChannels.clone();
        Arrays.sort(outliers);
        boolean[] seen = new boolean[dim];
        for (int c : outliers) {
            if (c < 0 || c >= dim) {
                throw new IllegalArgumentException("outlier channel " + c + " is outside [0, " + dim + ")");
            }
            if (seen[c]) {
                throw new IllegalArgumentException("outlier channel " + c + " is listed twice");
            }
            seen[c] = true;
        }
        rest = new int[dim - outliers.length];
        for (int i = 0, k = 0; i < dim; i++) {
            if (!seen[i]) {
                rest[k++] = i;
            }
        }
        if (hi.dim() != outliers.length || lo.dim() != rest.length) {
            throw new IllegalArgumentException("codec dimensions " + hi.dim() + "+" + lo.dim()
                    + " do not match the split " + outliers.length + "+" + rest.length);
        }
        this.hi = hi;
        this.lo = lo;
        int max = Math.max(hi.accumulatorSize(), lo.accumulatorSize());
        scratch = ThreadLocal.withInitial(() -> new float[][]{new float[outliers.length], new float[rest.length],
                new float[Math.max(max, dim)]});
    }

    /**
     * Chooses the {@code count} channels with the largest RMS over sample vectors
     * ({@code samples} holds n vectors of {@code dim} values back to back).
     */
    public static int[] chooseOutliers(float[] samples, int dim, int count) {
        if (dim <= 0 || samples.length % dim != 0) {
            throw new IllegalArgumentException("sample array length " + samples.length + " is not a multiple of dimension " + dim);
        }
        if (count < 0 || count > dim) {
            throw new IllegalArgumentException("outlier count " + count + " is outside [0, " + dim + "]");
        }
        int n = samples.length / dim;
        double[] ms = new double[dim];
        for (int v = 0; v < n; v++) {
            for (int c = 0; c < dim; c++) {
                double x = samples[v * dim + c];
                ms[c] += x * x;
            }
        }
        Integer[] idx = new Integer[dim];
        for (int i = 0; i < dim; i++) {
            idx[i] = i;
        }
        Arrays.sort(idx, (a, b) -> Double.compare(ms[b], ms[a]) != 0 ? Double.compare(ms[b], ms[a]) : Integer.compare(a, b));
        int[] out = new int[count];
        for (int i = 0; i < count; i++) {
            out[i] = idx[i];
        }
        Arrays.sort(out);
        return out;
    }

    public int[] outlierChannels() {
        return outliers.clone();
    }

    @Override
    public int dim() {
        return dim;
    }

    @Override
    public int recordBytes() {
        return hi.recordBytes() + lo.recordBytes();
    }

    private void split(float[] x, int xo, float[] a, float[] b) {
        for (int i = 0; i < outliers.length; i++) {
            a[i] = x[xo + outliers[i]];
        }
        for (int i = 0; i < rest.length; i++) {
            b[i] = x[xo + rest[i]];
        }
    }

    @Override
    public void encode(float[] x, int xo, MemorySegment dst, long off) {
        VectorCodec.checkedSumOfSquares(x, xo, dim);
        float[][] t = scratch.get();
        split(x, xo, t[0], t[1]);
        hi.encode(t[0], 0, dst, off);
        lo.encode(t[1], 0, dst, off + hi.recordBytes());
    }

    @Override
    public void decode(MemorySegment src, long off, float[] out, int oo) {
        float[][] t = scratch.get();
        hi.decode(src, off, t[0], 0);
        lo.decode(src, off + hi.recordBytes(), t[1], 0);
        for (int i = 0; i < outliers.length; i++) {
            out[oo + outliers[i]] = t[0][i];
        }
        for (int i = 0; i < rest.length; i++) {
            out[oo + rest[i]] = t[1][i];
        }
    }

    @Override
    public int queryStateSize() {
        return hi.queryStateSize() + lo.queryStateSize();
    }

    @Override
    public void prepareQuery(float[] q, int qo, float[] state, int so) {
        float[][] t = scratch.get();
        split(q, qo, t[0], t[1]);
        hi.prepareQuery(t[0], 0, state, so);
        lo.prepareQuery(t[1], 0, state, so + hi.queryStateSize());
    }

    @Override
    public float score(float[] state, int so, MemorySegment src, long off) {
        return hi.score(state, so, src, off) + lo.score(state, so + hi.queryStateSize(), src, off + hi.recordBytes());
    }

    @Override
    public int accumulatorSize() {
        return hi.accumulatorSize() + lo.accumulatorSize();
    }

    @Override
    public void accumulate(float w, MemorySegment src, long off, float[] acc, int ao) {
        hi.accumulate(w, src, off, acc, ao);
        lo.accumulate(w, src, off + hi.recordBytes(), acc, ao + hi.accumulatorSize());
    }

    @Override
    public void finish(float[] acc, int ao, float[] out, int oo) {
        float[][] t = scratch.get();
        hi.finish(acc, ao, t[0], 0);
        lo.finish(acc, ao + hi.accumulatorSize(), t[1], 0);
        for (int i = 0; i < outliers.length; i++) {
            out[oo + outliers[i]] = t[0][i];
        }
        for (int i = 0; i < rest.length; i++) {
            out[oo + rest[i]] = t[1][i];
        }
    }

    @Override
    public int featureSize() {
        return hi.featureSize() + lo.featureSize();
    }

    @Override
    public void queryFeatures(float[] q, int qo, float[] out, int oo) {
        float[][] t = scratch.get();
        split(q, qo, t[0], t[1]);
        hi.queryFeatures(t[0], 0, out, oo);
        lo.queryFeatures(t[1], 0, out, oo + hi.featureSize());
    }

    @Override
    public void features(byte[] buf, int off, float[] out, int oo) {
        hi.features(buf, off, out, oo);
        lo.features(buf, off + hi.recordBytes(), out, oo + hi.featureSize());
    }

    @Override
    public void finishFeatures(float[] acc, int ao, float[] out, int oo) {
        float[][] t = scratch.get();
        hi.finishFeatures(acc, ao, t[0], 0);
        lo.finishFeatures(acc, ao + hi.featureSize(), t[1], 0);
        for (int i = 0; i < outliers.length; i++) {
            out[oo + outliers[i]] = t[0][i];
        }
        for (int i = 0; i < rest.length; i++) {
            out[oo + rest[i]] = t[1][i];
        }
    }

    @Override
    public String describe() {
        return "split(" + outliers.length + " outlier channels: " + hi.describe() + " | " + rest.length + ": " + lo.describe() + ")";
    }
}
