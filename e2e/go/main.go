// The SDK compatibility app, written with the official StateFun Go SDK
// (github.com/apache/flink-statefun/statefun-sdk-go/v3 v3.3.0, unchanged), served with
// net/http at POST /statefun on 127.0.0.1:$PORT. The Java and JavaScript apps (e2e/java,
// e2e/js) are the same app, with namespace "go" here; docs/testing.md ("StateFun SDKs")
// describes it. Nothing here knows about Spindle.
//
// Functions:
//
//	go/counter  state: count (int32), note (string, expires 2 s after write); takes
//	            go/Command "add N" | "note TEXT" | "probe" | "arm" | "disarm T", and strings
//	go/echo     state: seen (int64); replies "TEXT#seen=N" to its caller
//	go/relay    string TEXT -> Kafka egress go/kafka-out: topic "relayed", key = id, value "TEXT!"
package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/apache/flink-statefun/statefun-sdk-go/v3/pkg/statefun"
)

var (
	counterType = statefun.TypeNameFrom("go/counter")
	echoType    = statefun.TypeNameFrom("go/echo")
	relayType   = statefun.TypeNameFrom("go/relay")
	outEgress   = statefun.TypeNameFrom("go/out")
	kafkaEgress = statefun.TypeNameFrom("go/kafka-out")

	count = statefun.ValueSpec{Name: "count", ValueType: statefun.Int32Type}
	note  = statefun.ValueSpec{Name: "note", ValueType: statefun.StringType, Expiration: statefun.ExpireAfterWrite(2 * time.Second)}
	seen  = statefun.ValueSpec{Name: "seen", ValueType: statefun.Int64Type}

	commandType = textType{statefun.TypeNameFrom("go/Command")}
)

// textType is the custom type go/Command: the command as UTF-8 text.
type textType struct{ name statefun.TypeName }

func (t textType) GetTypeName() statefun.TypeName { return t.name }

func (t textType) Deserialize(r io.Reader, receiver interface{}) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s, ok := receiver.(*string)
	if !ok {
		return fmt.Errorf("%s deserializes into *string, not %T", t.name, receiver)
	}
	*s = string(b)
	return nil
}

func (t textType) Serialize(w io.Writer, data interface{}) error {
	s, ok := data.(string)
	if !ok {
		return fmt.Errorf("%s serializes a string, not %T", t.name, data)
	}
	_, err := io.WriteString(w, s)
	return err
}

func egress(ctx statefun.Context, text string) {
	ctx.SendEgress(statefun.GenericEgressBuilder{Target: outEgress, Value: text, ValueType: statefun.StringType})
}

func counter(ctx statefun.Context, message statefun.Message) error {
	me := ctx.Self().Id
	switch {
	case message.Is(commandType):
		var text string
		if err := message.As(commandType, &text); err != nil {
			return err
		}
		op, arg, _ := strings.Cut(text, " ")
		switch op {
		case "add":
			n, err := strconv.Atoi(arg)
			if err != nil {
				return fmt.Errorf("add %q: %w", arg, err)
			}
			var c int32
			ctx.Storage().Get(count, &c)
			c += int32(n)
			ctx.Storage().Set(count, c)
			ctx.Send(statefun.MessageBuilder{
				Target: statefun.Address{FunctionType: echoType, Id: me},
				Value:  fmt.Sprintf("%s:%d", me, c),
			})
		case "note":
			ctx.Storage().Set(note, arg)
			egress(ctx, fmt.Sprintf("note-set:%s:%s", me, arg))
		case "probe":
			var text string
			if ctx.Storage().Get(note, &text) {
				egress(ctx, fmt.Sprintf("probe:%s:present:%s", me, text))
			} else {
				egress(ctx, fmt.Sprintf("probe:%s:absent:", me))
			}
		case "arm":
			for _, name := range []string{"a", "b", "c"} {
				token, err := statefun.NewCancellationToken(me + "-" + name)
				if err != nil {
					return err
				}
				ctx.SendAfterWithCancellationToken(2*time.Second, token, statefun.MessageBuilder{
					Target: statefun.Address{FunctionType: counterType, Id: me},
					Value:  "ding-" + name,
				})
			}
			token, _ := statefun.NewCancellationToken(me + "-c")
			ctx.CancelDelayedMessage(token)
		case "disarm":
			token, err := statefun.NewCancellationToken(me + "-" + arg)
			if err != nil {
				return err
			}
			ctx.CancelDelayedMessage(token)
		default:
			return fmt.Errorf("unknown command %q", op)
		}
	case message.IsString():
		text := message.AsString()
		if strings.HasPrefix(text, "ding-") {
			egress(ctx, fmt.Sprintf("delayed:%s:%s", me, text))
		} else {
			egress(ctx, "echoed:"+text)
		}
	default:
		return fmt.Errorf("unexpected message type %s", message.ValueTypeName())
	}
	return nil
}

func echo(ctx statefun.Context, message statefun.Message) error {
	var n int64
	ctx.Storage().Get(seen, &n)
	n++
	ctx.Storage().Set(seen, n)
	caller := ctx.Caller()
	if caller == nil {
		return fmt.Errorf("echo needs a caller")
	}
	ctx.Send(statefun.MessageBuilder{Target: *caller, Value: fmt.Sprintf("%s#seen=%d", message.AsString(), n)})
	return nil
}

func relay(ctx statefun.Context, message statefun.Message) error {
	ctx.SendEgress(statefun.KafkaEgressBuilder{
		Target: kafkaEgress,
		Topic:  "relayed",
		Key:    ctx.Self().Id,
		Value:  message.AsString() + "!",
	})
	return nil
}

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8000"
	}
	builder := statefun.StatefulFunctionsBuilder()
	for _, spec := range []statefun.StatefulFunctionSpec{
		{FunctionType: counterType, States: []statefun.ValueSpec{count, note}, Function: statefun.StatefulFunctionPointer(counter)},
		{FunctionType: echoType, States: []statefun.ValueSpec{seen}, Function: statefun.StatefulFunctionPointer(echo)},
		{FunctionType: relayType, Function: statefun.StatefulFunctionPointer(relay)},
	} {
		if err := builder.WithSpec(spec); err != nil {
			log.Fatalf("registering %s: %v", spec.FunctionType, err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/statefun", builder.AsHandler())
	listener, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("statefun-go-app: StateFun Go SDK v3.3.0 listening on %s", listener.Addr())
	log.Fatal(http.Serve(listener, mux))
}
