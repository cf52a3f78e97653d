package io.kvquant.persist;

import java.io.ByteArrayOutputStream;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.util.zip.CRC32C;

/** Little-endian reading with bounds that report truncation, writing into a growable buffer, and CRC32C. */
final class Le {
    static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED.withOrder(java.nio.ByteOrder.LITTLE_ENDIAN);
    static final ValueLayout.OfLong I64 = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(java.nio.ByteOrder.LITTLE_ENDIAN);
    static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(java.nio.ByteOrder.LITTLE_ENDIAN);

    private Le() {
    }

    static int crc(MemorySegment s, long off, long len) {
        CRC32C c = new CRC32C();
        long done = 0;
        while (done < len) {
            int n = (int) Math.min(len - done, 1 << 30);
            c.update(s.asSlice(off + done, n).asByteBuffer());
            done += n;
        }
        return (int) c.getValue();
    }

    /** A cursor over a segment; reads past its end throw {@link CacheRefusedException} naming {@code what}. */
    static final class Reader {
        final MemorySegment s;
        long pos;
        final long end;
        final String what;

        Reader(MemorySegment s, long pos, long end, String what) {
            this.s = s;
            this.pos = pos;
            this.end = end;
            this.what = what;
        }

        void need(long n) throws CacheRefusedException {
            if (n < 0 || pos + n > end) {
                throw new CacheRefusedException(what + " is truncated or corrupted (a field runs past its end at byte " + pos + ")");
            }
        }

        int i32() throws CacheRefusedException {
            need(4);
            int v = s.get(I32, pos);
            pos += 4;
            return v;
        }

        /** A non-negative int no larger than {@code max}. */
        int count(int max, String field) throws CacheRefusedException {
            int v = i32();
            if (v < 0 || v > max) {
                throw new CacheRefusedException(what + " is corrupted (" + field + " = " + v + ")");
            }
            return v;
        }

        long i64() throws CacheRefusedException {
            need(8);
            long v = s.get(I64, pos);
            pos += 8;
            return v;
        }

        String str() throws CacheRefusedException {
            int n = count(1 << 16, "string length");
            need(n);
            byte[] b = new byte[n];
            MemorySegment.copy(s, ValueLayout.JAVA_BYTE, pos, b, 0, n);
            pos += n;
            return new String(b, StandardCharsets.UTF_8);
        }

        byte[] bytes(int n) throws CacheRefusedException {
            need(n);
            byte[] b = new byte[n];
            MemorySegment.copy(s, ValueLayout.JAVA_BYTE, pos, b, 0, n);
            pos += n;
            return b;
        }
    }

    /** Little-endian writing into a byte array. */
    static final class Writer {
        final ByteArrayOutputStream out = new ByteArrayOutputStream();

        Writer i32(int v) {
            for (int i = 0; i < 4; i++) {
                out.write(v >>> (8 * i));
            }
            return this;
        }

        Writer i64(long v) {
            for (int i = 0; i < 8; i++) {
                out.write((int) (v >>> (8 * i)));
            }
            return this;
        }

        Writer str(String s) {
            byte[] b = s.getBytes(StandardCharsets.UTF_8);
            i32(b.length);
            out.write(b, 0, b.length);
            return this;
        }

        Writer bytes(byte[] b) {
            out.write(b, 0, b.length);
            return this;
        }

        byte[] toBytes() {
            return out.toByteArray();
        }
    }
}
