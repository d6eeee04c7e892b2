package dev.spindle.statefun;

import java.io.FileReader;
import java.io.Reader;
import java.util.Properties;
import org.apache.flink.statefun.flink.harness.Harness;

/**
 * Runs one StateFun 3.3 application in this JVM: the StateFun job on a local Flink MiniCluster
 * (what {@code statefun-flink-harness} does, without replacing any ingress or egress), with the
 * remote module named by {@code statefun.remote.module-name} (e.g. {@code file:///…/module.yaml}).
 *
 * <p>Usage: {@code Launcher FLINK_CONF} — a properties file of Flink configuration
 * ({@code flink-conf.yaml} keys, one {@code key=value} per line). Runs until the process is
 * stopped: a streaming job has no end.
 */
public final class Launcher {
  private Launcher() {}

  public static void main(String[] args) throws Exception {
    if (args.length != 1) {
      System.err.println("usage: Launcher FLINK_CONF (a properties file of Flink configuration)");
      System.exit(2);
    }
    Properties conf = new Properties();
    try (Reader r = new FileReader(args[0])) {
      conf.load(r);
    }
    Harness harness = new Harness();
    for (String key : conf.stringPropertyNames()) {
      harness.withConfiguration(key, conf.getProperty(key));
    }
    System.err.println("statefun-launcher: starting the StateFun job with " + conf);
    harness.start();
  }
}
