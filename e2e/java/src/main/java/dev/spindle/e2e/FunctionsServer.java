package dev.spindle.e2e;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.util.concurrent.Executors;
import org.apache.flink.statefun.sdk.java.handler.RequestReplyHandler;
import org.apache.flink.statefun.sdk.java.slice.Slice;
import org.apache.flink.statefun.sdk.java.slice.Slices;

/**
 * Serves {@link Functions} at POST /statefun on 127.0.0.1:$PORT with the JDK's built-in HTTP
 * server (HTTP/1.1, keep-alive), handing each request body to the SDK's RequestReplyHandler.
 */
public final class FunctionsServer {
  public static void main(String[] args) throws IOException {
    int port = Integer.parseInt(System.getenv().getOrDefault("PORT", "8000"));
    RequestReplyHandler handler = Functions.all().requestReplyHandler();
    HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 0);
    server.createContext("/statefun", exchange -> handle(handler, exchange));
    // The worker invokes different addresses concurrently: a few threads serve them in parallel.
    server.setExecutor(Executors.newFixedThreadPool(4));
    server.start();
    System.err.println("statefun-java-app: StateFun Java SDK 3.3.0 listening on 127.0.0.1:" + port);
  }

  private static void handle(RequestReplyHandler handler, HttpExchange exchange)
      throws IOException {
    try (exchange) {
      if (!"POST".equals(exchange.getRequestMethod())) {
        exchange.sendResponseHeaders(405, -1);
        return;
      }
      byte[] body;
      try (InputStream in = exchange.getRequestBody()) {
        body = in.readAllBytes();
      }
      byte[] reply;
      try {
        Slice result = handler.handle(Slices.wrap(body)).join();
        reply = result.toByteArray();
      } catch (RuntimeException e) {
        // What the SDK threw goes to stderr and, as text, back to the worker with a 500.
        e.printStackTrace();
        byte[] text = String.valueOf(e).getBytes(java.nio.charset.StandardCharsets.UTF_8);
        exchange.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
        exchange.sendResponseHeaders(500, text.length);
        try (OutputStream out = exchange.getResponseBody()) {
          out.write(text);
        }
        return;
      }
      exchange.getResponseHeaders().set("Content-Type", "application/octet-stream");
      // A length of 0 would mean "chunked" to HttpServer; -1 means no body.
      exchange.sendResponseHeaders(200, reply.length == 0 ? -1 : reply.length);
      try (OutputStream out = exchange.getResponseBody()) {
        out.write(reply);
      }
    }
  }

  private FunctionsServer() {}
}
