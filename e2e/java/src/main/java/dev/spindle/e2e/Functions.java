package dev.spindle.e2e;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import org.apache.flink.statefun.sdk.java.Address;
import org.apache.flink.statefun.sdk.java.Context;
import org.apache.flink.statefun.sdk.java.StatefulFunction;
import org.apache.flink.statefun.sdk.java.StatefulFunctionSpec;
import org.apache.flink.statefun.sdk.java.StatefulFunctions;
import org.apache.flink.statefun.sdk.java.TypeName;
import org.apache.flink.statefun.sdk.java.ValueSpec;
import org.apache.flink.statefun.sdk.java.io.KafkaEgressMessage;
import org.apache.flink.statefun.sdk.java.message.EgressMessageBuilder;
import org.apache.flink.statefun.sdk.java.message.Message;
import org.apache.flink.statefun.sdk.java.message.MessageBuilder;
import org.apache.flink.statefun.sdk.java.types.SimpleType;
import org.apache.flink.statefun.sdk.java.types.Type;

/**
 * The SDK compatibility app, written with the official StateFun Java SDK; the Go and
 * JavaScript apps (e2e/go, e2e/js) are the same app. Nothing here knows about Spindle.
 *
 * <pre>
 * java/counter  state: count (int), note (string, expires 2 s after write)
 *               java/Command "add N"      count += N, asks java/echo to echo "id:count"
 *               java/Command "note TEXT"  stores note                  -> egress "note-set:id:TEXT"
 *               java/Command "probe"      reads note                   -> egress "probe:id:present:TEXT" | "probe:id:absent:"
 *               java/Command "arm"        send_after 2 s "ding-a", "ding-b", "ding-c" (tokens id-a, id-b,
 *                                         id-c), then cancels id-c in the same call
 *               java/Command "disarm T"   cancels the delayed message of token id-T
 *               string "ding-*"           (delayed, from itself)       -> egress "delayed:id:ding-*"
 *               string from java/echo                                  -> egress "echoed:TEXT"
 * java/echo     state: seen (long); replies "TEXT#seen=N" to its caller
 * java/relay    string TEXT -> Kafka egress java/kafka-out: topic "relayed", key = id, value "TEXT!"
 * </pre>
 *
 * java/Command is a custom type: its value is the command as UTF-8 text.
 */
final class Functions {
  static final TypeName COUNTER = TypeName.typeNameFromString("java/counter");
  static final TypeName ECHO = TypeName.typeNameFromString("java/echo");
  static final TypeName RELAY = TypeName.typeNameFromString("java/relay");
  static final TypeName OUT = TypeName.typeNameFromString("java/out");
  static final TypeName KAFKA_OUT = TypeName.typeNameFromString("java/kafka-out");

  static final Type<String> COMMAND =
      SimpleType.simpleImmutableTypeFrom(
          TypeName.typeNameFromString("java/Command"),
          s -> s.getBytes(StandardCharsets.UTF_8),
          b -> new String(b, StandardCharsets.UTF_8));

  static final ValueSpec<Integer> COUNT = ValueSpec.named("count").withIntType();
  static final ValueSpec<String> NOTE =
      ValueSpec.named("note").thatExpireAfterWrite(Duration.ofSeconds(2)).withUtf8StringType();
  static final ValueSpec<Long> SEEN = ValueSpec.named("seen").withLongType();

  static StatefulFunctions all() {
    StatefulFunctions functions = new StatefulFunctions();
    functions.withStatefulFunction(
        StatefulFunctionSpec.builder(COUNTER)
            .withValueSpecs(COUNT, NOTE)
            .withSupplier(() -> Functions::counter));
    functions.withStatefulFunction(
        StatefulFunctionSpec.builder(ECHO).withValueSpec(SEEN).withSupplier(() -> Functions::echo));
    functions.withStatefulFunction(
        StatefulFunctionSpec.builder(RELAY).withSupplier(() -> Functions::relay));
    return functions;
  }

  private static void egress(Context context, String text) {
    context.send(EgressMessageBuilder.forEgress(OUT).withValue(text).build());
  }

  private static CompletableFuture<Void> counter(Context context, Message message) {
    String me = context.self().id();
    if (message.is(COMMAND)) {
      String[] cmd = message.as(COMMAND).split(" ", 2);
      String arg = cmd.length > 1 ? cmd[1] : "";
      switch (cmd[0]) {
        case "add":
          int count = context.storage().get(COUNT).orElse(0) + Integer.parseInt(arg);
          context.storage().set(COUNT, count);
          context.send(MessageBuilder.forAddress(ECHO, me).withValue(me + ":" + count).build());
          break;
        case "note":
          context.storage().set(NOTE, arg);
          egress(context, "note-set:" + me + ":" + arg);
          break;
        case "probe":
          egress(
              context,
              context
                  .storage()
                  .get(NOTE)
                  .map(note -> "probe:" + me + ":present:" + note)
                  .orElse("probe:" + me + ":absent:"));
          break;
        case "arm":
          for (String name : new String[] {"a", "b", "c"}) {
            context.sendAfter(
                Duration.ofSeconds(2),
                me + "-" + name,
                MessageBuilder.forAddress(COUNTER, me).withValue("ding-" + name).build());
          }
          context.cancelDelayedMessage(me + "-c");
          break;
        case "disarm":
          context.cancelDelayedMessage(me + "-" + arg);
          break;
        default:
          throw new IllegalArgumentException("unknown command " + cmd[0]);
      }
    } else if (message.isUtf8String()) {
      String text = message.asUtf8String();
      egress(context, (text.startsWith("ding-") ? "delayed:" + me + ":" : "echoed:") + text);
    } else {
      throw new IllegalArgumentException("unexpected message type " + message.valueTypeName());
    }
    return context.done();
  }

  private static CompletableFuture<Void> echo(Context context, Message message) {
    long seen = context.storage().get(SEEN).orElse(0L) + 1;
    context.storage().set(SEEN, seen);
    Address caller =
        context.caller().orElseThrow(() -> new IllegalStateException("echo needs a caller"));
    context.send(
        MessageBuilder.forAddress(caller)
            .withValue(message.asUtf8String() + "#seen=" + seen)
            .build());
    return context.done();
  }

  private static CompletableFuture<Void> relay(Context context, Message message) {
    context.send(
        KafkaEgressMessage.forEgress(KAFKA_OUT)
            .withTopic("relayed")
            .withUtf8Key(context.self().id())
            .withUtf8Value(message.asUtf8String() + "!")
            .build());
    return context.done();
  }

  private Functions() {}
}
