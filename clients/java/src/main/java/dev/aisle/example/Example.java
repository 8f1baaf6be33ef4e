package dev.aisle.example;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import dev.aisle.v1.Event;
import dev.aisle.v1.EventServiceGrpc;
import dev.aisle.v1.EventType;
import dev.aisle.v1.RecommendRequest;
import dev.aisle.v1.RecommendResponse;
import dev.aisle.v1.RecommendationServiceGrpc;
import dev.aisle.v1.ScoredItem;
import dev.aisle.v1.TrackRequest;
import dev.aisle.v1.TrackResponse;
import io.grpc.ClientInterceptor;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.MetadataUtils;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

/**
 * The smallest Java client of Aisle: tracks one event, asks for recommendations with a bearer token, and shows
 * how a bad request's field violations (google.rpc.BadRequest) arrive.
 */
public final class Example {
  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  private Example() {}

  public static void main(String[] args) throws InterruptedException, InvalidProtocolBufferException {
    Map<String, String> options = parse(args);
    String user = options.getOrDefault("user", "u1");
    String eventId = options.getOrDefault("event-id", "java-" + System.nanoTime());

    // Plaintext for a local server; TlsChannelCredentials behind the TLS front.
    ManagedChannel channel = Grpc.newChannelBuilder(
        options.getOrDefault("target", "localhost:50051"), InsecureChannelCredentials.create()).build();
    Metadata headers = new Metadata();
    String token = options.getOrDefault("token", "");
    if (!token.isEmpty()) {
      headers.put(AUTHORIZATION, "Bearer " + token);
    }
    ClientInterceptor bearer = MetadataUtils.newAttachHeadersInterceptor(headers);
    try {
      // Track: writes are safe to retry with the same event id.
      TrackResponse tracked = EventServiceGrpc.newBlockingStub(channel).withInterceptors(bearer)
          .withDeadlineAfter(10, TimeUnit.SECONDS)
          .track(TrackRequest.newBuilder().addEvents(Event.newBuilder()
              .setEventId(eventId).setType(EventType.VIEW).setUserId(user)
              .setItemId(options.getOrDefault("item", "i1"))).build());
      System.out.printf("tracked accepted=%d duplicates=%d rejected=%d%n",
          tracked.getAccepted(), tracked.getDuplicates(), tracked.getRejectedCount());

      // Recommend: the very next answer reflects the event just tracked.
      RecommendationServiceGrpc.RecommendationServiceBlockingStub recommendations =
          RecommendationServiceGrpc.newBlockingStub(channel).withInterceptors(bearer);
      RecommendResponse answer = recommendations.withDeadlineAfter(5, TimeUnit.SECONDS)
          .recommend(RecommendRequest.newBuilder().setUserId(user).setK(5).setExplain(true).build());
      System.out.println("recommended " + answer.getItemsList().stream()
          .map(ScoredItem::getItemId).collect(Collectors.joining(" ")));
      System.out.println("recommendation_id " + answer.getRecommendationId());

      // Bad input: INVALID_ARGUMENT, with each offending field in a google.rpc.BadRequest detail.
      try {
        recommendations.withDeadlineAfter(5, TimeUnit.SECONDS)
            .recommend(RecommendRequest.newBuilder().setUserId(user).setK(1000).build());
        throw new IllegalStateException("expected INVALID_ARGUMENT for k=1000");
      } catch (StatusRuntimeException e) {
        if (e.getStatus().getCode() != Status.Code.INVALID_ARGUMENT) {
          throw e;
        }
        com.google.rpc.Status status = StatusProto.fromThrowable(e);
        for (Any detail : status == null ? java.util.List.<Any>of() : status.getDetailsList()) {
          if (detail.is(BadRequest.class)) {
            for (BadRequest.FieldViolation violation : detail.unpack(BadRequest.class).getFieldViolationsList()) {
              System.out.println("invalid " + violation.getField() + ": " + violation.getDescription());
            }
          }
        }
      }
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  /** `--name value` pairs. */
  private static Map<String, String> parse(String[] args) {
    Map<String, String> options = new HashMap<>();
    for (int i = 0; i + 1 < args.length; i += 2) {
      if (!args[i].startsWith("--")) {
        throw new IllegalArgumentException("expected --name value, got " + args[i]);
      }
      options.put(args[i].substring(2), args[i + 1]);
    }
    return options;
  }
}
