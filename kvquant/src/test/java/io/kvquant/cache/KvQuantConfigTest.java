package io.kvquant.cache;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.codec.RotationKind;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class KvQuantConfigTest {

    @ParameterizedTest
    @ValueSource(strings = {"full", "fp16", "turbo3.5", "turbo2.5", "turbo4", "k4v3", "kivi2", "kivi4",
            "turbo3.5,window=128,boundary=2,qjl=k", "k4v2.5,qjl=kv,sjl=orthogonal,rot=haar,normfix=on,seed=7,page=64",
            "kivi2,window=64,group=64"})
    void compactFormRoundTrips(String s) {
        KvQuantConfig c = KvQuantConfig.parse(s);
        assertEquals(c, KvQuantConfig.parse(c.toString()), s + " -> " + c);
    }

    @Test
    void presetsMeanWhatTheySay() {
        KvQuantConfig c = KvQuantConfig.parse("k4v3,window=128,boundary=2,qjl=k,rot=haar");
        assertEquals(KvQuantConfig.Kind.TURBO, c.kind());
        assertEquals(4, c.keyBits());
        assertEquals(3, c.valueBits());
        assertTrue(c.keyQjl());
        assertFalse(c.valueQjl());
        assertEquals(128, c.window());
        assertEquals(2, c.boundaryLayers());
        assertEquals(RotationKind.HAAR, c.rotation());
        assertTrue(c.isBoundary(0, 8) && c.isBoundary(1, 8) && c.isBoundary(7, 8) && !c.isBoundary(2, 8));
        assertEquals("k4v3,window=128,boundary=2,qjl=k,rot=haar", c.toString());
        assertEquals(KvQuantConfig.Kind.KIVI, KvQuantConfig.parse("kivi2").kind());
    }

    @Test
    void errorsNameTheBadPart() {
        assertMessage("turbo3.5,windw=128", "windw");
        assertMessage("turbo9", "bits");
        assertMessage("turbo3.3", "3.3");
        assertMessage("zip4", "zip4");
        assertMessage("turbo3,qjl=q", "qjl");
        assertMessage("turbo3,window=-1", "window");
        assertMessage("turbo3,window=many", "window=many");
        assertMessage("kivi3", "KIVI");
        assertMessage("fp16,window=8", "window");
        assertMessage("turbo1,qjl=k", "QJL");
        assertMessage("", "empty");
        assertMessage("turbo3,rot=fft", "fft");
    }

    private static void assertMessage(String spec, String part) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> KvQuantConfig.parse(spec), spec);
        assertTrue(e.getMessage().contains(part), "message for '" + spec + "' should name '" + part + "': " + e.getMessage());
    }
}
