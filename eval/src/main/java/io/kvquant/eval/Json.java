package io.kvquant.eval;

import java.util.Collection;
import java.util.Map;

/** A minimal JSON writer for results (maps, lists, strings, numbers, booleans, null). */
public final class Json {

    private Json() {
    }

    public static String write(Object o) {
        StringBuilder b = new StringBuilder();
        write(b, o, 0, true);
        return b.toString();
    }

    private static void write(StringBuilder b, Object o, int indent, boolean pretty) {
        if (o == null) {
            b.append("null");
        } else if (o instanceof String s) {
            quote(b, s);
        } else if (o instanceof Double d) {
            b.append(Double.isFinite(d) ? num(d) : "null");
        } else if (o instanceof Float f) {
            b.append(Float.isFinite(f) ? num(f.doubleValue()) : "null");
        } else if (o instanceof Number || o instanceof Boolean) {
            b.append(o);
        } else if (o instanceof Map<?, ?> m) {
            b.append('{');
            int i = 0;
            for (Map.Entry<?, ?> e : m.entrySet()) {
                if (i++ > 0) {
                    b.append(',');
                }
                nl(b, indent + 1, pretty);
                quote(b, String.valueOf(e.getKey()));
                b.append(pretty ? ": " : ":");
                write(b, e.getValue(), indent + 1, pretty);
            }
            if (!m.isEmpty()) {
                nl(b, indent, pretty);
            }
            b.append('}');
        } else if (o instanceof Collection<?> c) {
            b.append('[');
            int i = 0;
            boolean flat = c.stream().allMatch(x -> x instanceof Number || x instanceof String);
            for (Object x : c) {
                if (i++ > 0) {
                    b.append(flat ? ", " : ",");
                }
                if (!flat) {
                    nl(b, indent + 1, pretty);
                }
                write(b, x, indent + 1, pretty);
            }
            if (!flat && !c.isEmpty()) {
                nl(b, indent, pretty);
            }
            b.append(']');
        } else {
            quote(b, o.toString());
        }
    }

    private static String num(double d) {
        if (d == Math.rint(d) && Math.abs(d) < 1e15) {
            return Long.toString((long) d);
        }
        return Double.toString(d);
    }

    private static void nl(StringBuilder b, int indent, boolean pretty) {
        if (pretty) {
            b.append('\n').append("  ".repeat(indent));
        }
    }

    private static void quote(StringBuilder b, String s) {
        b.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                default -> {
                    if (c < 0x20) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
                }
            }
        }
        b.append('"');
    }
}
