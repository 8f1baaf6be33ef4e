// Command aisle-example is the smallest Go client of Aisle: it tracks one event, asks for recommendations
// with a bearer token, and shows how a bad request's field violations (google.rpc.BadRequest) arrive.
//
//	go run ./cmd/aisle-example --target localhost:50051 --token "$TOKEN" --user u1 --item i42
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	aislev1 "github.com/aisle-project/aisle/clients/go/aislev1"
)

func main() {
	target := flag.String("target", "localhost:50051", "the server's host:port")
	token := flag.String("token", "", "a bearer JWT (empty: none, for a server without authentication)")
	user := flag.String("user", "u1", "the customer")
	item := flag.String("item", "i1", "the item the customer views")
	eventID := flag.String("event-id", "", "the event's idempotency key (default: one from the clock)")
	flag.Parse()
	if *eventID == "" {
		*eventID = fmt.Sprintf("go-%d", time.Now().UnixNano())
	}

	// Plaintext for a local server; use credentials.NewTLS behind the TLS front.
	conn, err := grpc.NewClient(*target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatalf("connect: %v", err)
	}
	defer conn.Close()

	ctx := context.Background()
	if *token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*token)
	}

	// Track: writes are safe to retry with the same event id.
	events := aislev1.NewEventServiceClient(conn)
	writeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tracked, err := events.Track(writeCtx, &aislev1.TrackRequest{Events: []*aislev1.Event{{
		EventId: *eventID, Type: aislev1.EventType_VIEW, UserId: *user, ItemId: *item,
	}}})
	if err != nil {
		log.Fatalf("track: %v", err)
	}
	fmt.Printf("tracked accepted=%d duplicates=%d rejected=%d\n",
		tracked.GetAccepted(), tracked.GetDuplicates(), len(tracked.GetRejected()))

	// Recommend: the very next answer reflects the event just tracked.
	recommendations := aislev1.NewRecommendationServiceClient(conn)
	readCtx, cancelRead := context.WithTimeout(ctx, 5*time.Second)
	defer cancelRead()
	answer, err := recommendations.Recommend(readCtx, &aislev1.RecommendRequest{UserId: *user, K: 5, Explain: true})
	if err != nil {
		log.Fatalf("recommend: %v", err)
	}
	ids := make([]string, 0, len(answer.GetItems()))
	for _, scored := range answer.GetItems() {
		ids = append(ids, scored.GetItemId())
	}
	fmt.Printf("recommended %s\n", strings.Join(ids, " "))
	fmt.Printf("recommendation_id %s\n", answer.GetRecommendationId())

	// Bad input: INVALID_ARGUMENT, with each offending field in a google.rpc.BadRequest detail.
	_, err = recommendations.Recommend(readCtx, &aislev1.RecommendRequest{UserId: *user, K: 1000})
	st, _ := status.FromError(err)
	if st.Code() != codes.InvalidArgument {
		log.Fatalf("expected INVALID_ARGUMENT for k=1000, got %v", err)
	}
	for _, detail := range st.Details() {
		if badRequest, ok := detail.(*errdetails.BadRequest); ok {
			for _, violation := range badRequest.GetFieldViolations() {
				fmt.Printf("invalid %s: %s\n", violation.GetField(), violation.GetDescription())
			}
		}
	}
}
