package io.kvquant.demo.graph;

import com.google.protobuf.CodedInputStream;
import com.google.protobuf.CodedOutputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * A protobuf message as its list of fields in wire order, without a schema: every field,
 * known or not, survives a read → write round trip byte for byte in value. The ONNX layer on
 * top ({@link OnnxModel}) names the few fields it needs by their numbers in the ONNX schema;
 * everything else is carried along untouched (opset imports, metadata, doc strings, ...).
 */
public final class Pb {

    /** One field: its number, wire type, and value (varint/fixed bits, or bytes for length-delimited). */
    public record Field(int number, int wireType, long bits, byte[] bytes) {
        public String string() {
            return new String(bytes, StandardCharsets.UTF_8);
        }

        public Pb message() {
            return Pb.parse(bytes);
        }
    }

    public final List<Field> fields;

    public Pb(List<Field> fields) {
        this.fields = fields;
    }

    public Pb() {
        this(new ArrayList<>());
    }

    public static Pb parse(byte[] data) {
        try {
            CodedInputStream in = CodedInputStream.newInstance(data);
            in.setSizeLimit(Integer.MAX_VALUE);
            List<Field> out = new ArrayList<>();
            while (!in.isAtEnd()) {
                int tag = in.readTag();
                int number = tag >>> 3;
                int wt = tag & 7;
                switch (wt) {
                    case 0 -> out.add(new Field(number, wt, in.readRawVarint64(), null));
                    case 1 -> out.add(new Field(number, wt, in.readRawLittleEndian64(), null));
                    case 2 -> out.add(new Field(number, wt, 0, in.readByteArray()));
                    case 5 -> out.add(new Field(number, wt, in.readRawLittleEndian32() & 0xffffffffL, null));
                    default -> throw new IllegalArgumentException("unsupported protobuf wire type " + wt + " (field " + number + ")");
                }
            }
            return new Pb(out);
        } catch (IOException e) {
            throw new IllegalArgumentException("not a valid protobuf message: " + e.getMessage(), e);
        }
    }

    public byte[] toBytes() {
        try {
            ByteArrayOutputStream bos = new ByteArrayOutputStream();
            CodedOutputStream out = CodedOutputStream.newInstance(bos);
            for (Field f : fields) {
                switch (f.wireType()) {
                    case 0 -> out.writeUInt64(f.number(), f.bits());
                    case 1 -> out.writeFixed64(f.number(), f.bits());
                    case 2 -> out.writeByteArray(f.number(), f.bytes());
                    case 5 -> out.writeFixed32(f.number(), (int) f.bits());
                    default -> throw new IllegalStateException("wire type " + f.wireType());
                }
            }
            out.flush();
            return bos.toByteArray();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** All fields with this number. */
    public List<Field> all(int number) {
        List<Field> r = new ArrayList<>();
        for (Field f : fields) {
            if (f.number() == number) {
                r.add(f);
            }
        }
        return r;
    }

    /** The last field with this number (protobuf semantics for singular fields), or null. */
    public Field one(int number) {
        Field r = null;
        for (Field f : fields) {
            if (f.number() == number) {
                r = f;
            }
        }
        return r;
    }

    public String string(int number, String dflt) {
        Field f = one(number);
        return f == null ? dflt : f.string();
    }

    public long varint(int number, long dflt) {
        Field f = one(number);
        return f == null ? dflt : f.bits();
    }

    public List<String> strings(int number) {
        List<String> r = new ArrayList<>();
        for (Field f : all(number)) {
            r.add(f.string());
        }
        return r;
    }

    /** A copy without the fields of these numbers. */
    public Pb without(int... numbers) {
        List<Field> r = new ArrayList<>();
        outer:
        for (Field f : fields) {
            for (int n : numbers) {
                if (f.number() == n) {
                    continue outer;
                }
            }
            r.add(f);
        }
        return new Pb(r);
    }

    public Pb add(int number, String s) {
        fields.add(new Field(number, 2, 0, s.getBytes(StandardCharsets.UTF_8)));
        return this;
    }

    public Pb add(int number, Pb m) {
        fields.add(new Field(number, 2, 0, m.toBytes()));
        return this;
    }

    public Pb add(int number, byte[] raw) {
        fields.add(new Field(number, 2, 0, raw));
        return this;
    }

    public Pb addVarint(int number, long v) {
        fields.add(new Field(number, 0, v, null));
        return this;
    }
}
