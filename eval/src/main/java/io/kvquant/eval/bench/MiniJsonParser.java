package io.kvquant.eval.bench;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Parses the flat JSON rows a child benchmark JVM prints: [{"k": number|string, ...}, ...]. */
final class MiniJsonParser {

    private MiniJsonParser() {
    }

    static List<Map<String, Object>> parseRows(String s) {
        List<Map<String, Object>> rows = new ArrayList<>();
        int i = s.indexOf('[');
        if (i < 0) {
            throw new IllegalStateException("no JSON array in child output");
        }
        while (true) {
            int open = s.indexOf('{', i);
            if (open < 0) {
                break;
            }
            int close = s.indexOf('}', open);
            Map<String, Object> row = new LinkedHashMap<>();
            for (String part : s.substring(open + 1, close).split(",\\s*\\n|,(?=\\s*\")")) {
                String p = part.trim();
                if (p.isEmpty()) {
                    continue;
                }
                int colon = p.indexOf(':');
                String key = p.substring(0, colon).trim().replace("\"", "");
                String val = p.substring(colon + 1).trim();
                if (val.startsWith("\"")) {
                    row.put(key, val.substring(1, val.length() - 1));
                } else {
                    row.put(key, Double.parseDouble(val));
                }
            }
            rows.add(row);
            i = close + 1;
        }
        return rows;
    }
}
