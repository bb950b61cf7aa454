package sqi.flinkpeer;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * This JVM's CPU time and peak RSS from /proc, and when the job's tasks
 * started. The tasks run in this JVM (the local MiniCluster), so a static
 * stamp set by the first task to open is seen by {@code main}.
 */
final class Metrics {
    private static final Object LOCK = new Object();
    private static double startCpu = -1;
    private static long startNanos;

    private Metrics() {}

    /** Stamps the CPU time and clock when the first task opens. */
    static void jobStarted() {
        synchronized (LOCK) {
            if (startCpu < 0) {
                startCpu = cpuSeconds();
                startNanos = System.nanoTime();
            }
        }
    }

    /** Process CPU seconds since the first task opened. */
    static double jobCpuSeconds() {
        synchronized (LOCK) {
            return startCpu < 0 ? Double.NaN : cpuSeconds() - startCpu;
        }
    }

    /** Wall seconds since the first task opened. */
    static double jobWallSeconds() {
        synchronized (LOCK) {
            return startCpu < 0 ? Double.NaN : (System.nanoTime() - startNanos) / 1e9;
        }
    }

    /** User plus system CPU seconds of the whole process, every thread (GC and JIT too). */
    static double cpuSeconds() {
        try {
            String stat = Files.readString(Path.of("/proc/self/stat"));
            String[] fields = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
            // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name.
            return (Long.parseLong(fields[11]) + Long.parseLong(fields[12])) / 100.0;
        } catch (IOException | RuntimeException e) {
            return Double.NaN;
        }
    }

    /** The process's peak resident set (VmHWM), in bytes. */
    static long peakRssBytes() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmHWM:")) {
                    return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
                }
            }
        } catch (IOException | RuntimeException e) {
            // Reported as 0: not Linux.
        }
        return 0;
    }
}
